"""The run's loggers: ``metrics.csv`` kept across ``--resume``, and the trackers of ``run.loggers``.

Lightning's CSVLogger deletes an existing ``metrics.csv`` when it opens a run directory, so a resumed run would
lose every row logged before the interruption (and with them the start of the training curves). This writer
appends instead, keeping the file's columns. Steps logged after the resumed checkpoint and before the kill
appear twice; the later row is the resumed run's (a reader keeps the last row per step).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from vtp_bench.choices import LOGGERS  # noqa: F401 (the names make_loggers builds)
from vtp_bench.errors import ConfigError


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


# ------------------------------------------------------------------------------------------- trackers
# ``run.loggers``: Lightning's own loggers by name. Each gets the resolved config as hyperparameters (Lightning
# logs VTPModule's), the training curves, and at the end the final validation metrics and summary.json.
EXTRAS = {"wandb": "wandb", "mlflow": "mlflow"}  # pip install vtp_bench[<extra>]


def _wandb(cfg: Any, run_dir: Path) -> Logger:
    from lightning.pytorch.loggers import WandbLogger

    # offline when WANDB_MODE=offline (or no login): the run is written under <run dir>/wandb, `wandb sync` later
    return WandbLogger(save_dir=str(run_dir), project=cfg.run.project or "vtp_bench", name=f"{cfg.name}/{run_dir.name}",
                       group=cfg.name)


def _mlflow(cfg: Any, run_dir: Path) -> Logger:
    from lightning.pytorch.loggers import MLFlowLogger

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:  # a file store in the run dir (MLflow 3 asks to opt in to file stores: done for this default only)
        uri = (run_dir / "mlruns").resolve().as_uri()
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLFlowLogger(experiment_name=cfg.run.project or cfg.name, run_name=run_dir.name, tracking_uri=uri)


def make_loggers(cfg: Any, run_dir: Path) -> list[Logger]:
    """The loggers ``run.loggers`` names (checked against ``LOGGERS`` when the config loads)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    build = {"csv": lambda: RunCSVLogger(save_dir=str(run_dir), name="", version=""),
             "tensorboard": lambda: TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""),
             "wandb": lambda: _wandb(cfg, run_dir), "mlflow": lambda: _mlflow(cfg, run_dir)}
    out = []
    for name in cfg.run.loggers:
        try:
            out.append(build[name]())
        except ImportError:
            raise ConfigError(f"run.loggers names {name!r}, which is not installed: pip install "
                              f"'vtp_bench[{EXTRAS[name]}]' (or drop it from run.loggers)") from None
    return out


def log_final(loggers: list[Logger], metrics: dict[str, float] | None, summary_file: Path, step: int) -> None:
    """The final validation metrics (``final/<name>``) to every logger, and the run's summary.json to the trackers
    that keep files (wandb, MLflow)."""
    from lightning.pytorch.loggers import MLFlowLogger, WandbLogger

    for lg in loggers:
        if metrics:
            lg.log_metrics({f"final/{k}": float(v) for k, v in metrics.items()}, step=step)
        if isinstance(lg, WandbLogger):
            lg.experiment.save(str(summary_file), base_path=str(summary_file.parent), policy="now")
        elif isinstance(lg, MLFlowLogger):
            lg.experiment.log_artifact(lg.run_id, str(summary_file))
        lg.finalize("success")
