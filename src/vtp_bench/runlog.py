"""The run's ``metrics.csv``, kept across ``--resume``.

Lightning's CSVLogger deletes an existing ``metrics.csv`` when it opens a run directory, so a resumed run would
lose every row logged before the interruption (and with them the start of the training curves). This writer
appends instead, keeping the file's columns. Steps logged after the resumed checkpoint and before the kill
appear twice; the later row is the resumed run's (a reader keeps the last row per step).
"""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(header)


class RunCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resume (``AppendingWriter``)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingWriter(log_dir=self.log_dir)
        return self._experiment
