"""Data formats (``data.format``): how a dataset's clips are stored and read, one file each, registered in
``registry.DATA_FORMATS`` (every module of this package is imported on the first lookup). The interface is
``base.DataFormat``. Nothing is imported here: ``vtp-bench list`` and the config read the names without torch."""
