"""Train one experiment: config -> DataModule + VTPModule -> Lightning Trainer, in runs/<experiment>/<version>/."""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from vtp_bench.config import to_dict
from vtp_bench.data.catalog import locate
from vtp_bench.data.datamodule import VideoTextDataModule
from vtp_bench.lit import VTPModule


class PeriodicCheckpoint(ModelCheckpoint):
    """At the end of every epoch and, when ``every_n_train_steps`` is set, every N steps as well (Lightning's
    ModelCheckpoint takes one trigger or the other); ``last.ckpt`` always holds the newest."""

    def __init__(self, every_n_train_steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(every_n_train_steps=every_n_train_steps, **kwargs)
        self._every_n_epochs = 1


def next_version(exp_dir: Path) -> str:
    nums = [int(p.name.split("_")[1]) for p in exp_dir.glob("version_*") if p.name.split("_")[1].isdigit()]
    return f"version_{max(nums, default=-1) + 1}"


def run_dir_for(cfg: DictConfig) -> Path:
    """The run's directory. The version is chosen once, by the launching process, and handed to the
    processes that Lightning or torchrun start through ``VTP_RUN_VERSION``, so that all ranks agree."""
    exp_dir = Path(cfg.run.dir) / cfg.name
    version = cfg.run.version or os.environ.get("VTP_RUN_VERSION") or next_version(exp_dir)
    os.environ["VTP_RUN_VERSION"] = version
    return exp_dir / version


def build_trainer(cfg: DictConfig, run_dir: Path, **overrides: Any) -> L.Trainer:
    ckpt_dir = run_dir / "checkpoints"
    callbacks = [
        PeriodicCheckpoint(dirpath=ckpt_dir, filename="epoch{epoch}-step{step}", auto_insert_metric_name=False,
                           save_last=True, save_top_k=-1, every_n_train_steps=cfg.run.ckpt_every_n_steps),
    ]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    loggers = [
        CSVLogger(save_dir=str(run_dir), name="", version=""),
        TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""),
    ]
    kwargs = {**OmegaConf.to_container(cfg.trainer), **overrides}
    # the DataModule shards data itself (no padded DistributedSampler, resumable order)
    kwargs["use_distributed_sampler"] = False
    return L.Trainer(default_root_dir=str(run_dir), callbacks=callbacks, logger=loggers, **kwargs)


def train(cfg: DictConfig, resume: str | None = None) -> dict[str, Any]:
    """Fit, then validate the final weights; returns a summary (run dir, checkpoint, metrics, skipped videos)."""
    # frozen towers stay in eval mode on purpose (no dropout in fixed features): not worth a warning
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    for name in cfg.data.train:  # fail before a run dir is made when the data is not there
        locate(name, cfg.data.root, "train")
    locate(cfg.data.eval[0], cfg.data.root, cfg.data.val_split)
    L.seed_everything(cfg.seed, workers=True)
    run_dir = run_dir_for(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    dm = VideoTextDataModule(cfg)
    module = VTPModule(to_dict(cfg))
    init_report = None
    if cfg.init.checkpoint and resume is None:  # a resumed run's weights come from its own checkpoint
        from vtp_bench.models.checkpoints import load_official

        init_report = load_official(module.method, cfg.init.checkpoint, cfg.init.source,
                                    temporal_fix=cfg.init.temporal_fix, strict=cfg.init.strict, trust=cfg.init.trust)
    trainer = build_trainer(cfg, run_dir)
    if init_report is not None and trainer.is_global_zero:
        print(f"init from {cfg.init.checkpoint}: {init_report.summary()}", flush=True)
    trainer.fit(module, datamodule=dm, ckpt_path=resume)
    skipped = sorted(set(module.skipped_videos))
    summary = {
        "run_dir": str(run_dir),
        "checkpoint": str(run_dir / "checkpoints" / "last.ckpt"),
        "global_step": trainer.global_step,
        "val_metrics": module.last_metrics,
        "init": init_report.to_dict() if init_report else None,
        "steps_per_dataset": dict(Counter(module.dataset_steps)),
        "skipped_videos": len(module.skipped_videos),
        "skipped_video_ids": skipped,
        "skipped_errors": module.skipped_errors,
    }
    if trainer.is_global_zero:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if skipped:
            print(f"\nWARNING: skipped {len(module.skipped_videos)} unreadable training samples "
                  f"({len(skipped)} distinct videos, listed in {run_dir / 'summary.json'}):")
            for vid in skipped[:10]:
                print(f"  {vid}: {module.skipped_errors.get(vid, '')}")
        else:
            print("\nNo training video was skipped.")
    summary["is_global_zero"] = trainer.is_global_zero
    return summary
