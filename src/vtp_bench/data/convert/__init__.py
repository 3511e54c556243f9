"""Converters from the benchmarks' official annotation files to the manifest schema (one module each).

``vtp-bench data convert FORMAT INPUT... --out MANIFEST [--video-root DIR]``; a new format is one module in
this package that registers itself with :func:`vtp_bench.data.convert.base.converter`.
"""
