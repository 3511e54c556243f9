"""Train one experiment: config -> DataModule + VTPModule -> Lightning Trainer, in runs/<experiment>/<version>/."""

from __future__ import annotations

import json
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from vtp_bench.config import apply_overrides, to_dict
from vtp_bench.data.catalog import locate
from vtp_bench.data.datamodule import VideoTextDataModule
from vtp_bench.data_time import DataTime
from vtp_bench.distributed import is_launch_rank_zero
from vtp_bench.lit import VTPModule
from vtp_bench.runlog import RunCSVLogger


class PeriodicCheckpoint(ModelCheckpoint):
    """At the end of every training epoch and, when ``every_n_train_steps`` is set, every N steps as well
    (Lightning's ModelCheckpoint takes one trigger or the other, and by default saves at the end of *validation*,
    so epochs without validation, ``check_val_every_n_epoch > 1``, would get no checkpoint); ``last.ckpt`` always
    holds the newest."""

    def __init__(self, every_n_train_steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(every_n_train_steps=every_n_train_steps, save_on_train_epoch_end=True, **kwargs)
        self._every_n_epochs = 1


def next_version(exp_dir: Path) -> str:
    nums = [int(p.name.split("_")[1]) for p in exp_dir.glob("version_*") if p.name.split("_")[1].isdigit()]
    return f"version_{max(nums, default=-1) + 1}"


class TrainError(RuntimeError):
    """A training request that cannot be carried out as asked (e.g. nothing to resume); says what to do."""


def resume_checkpoint(cfg: DictConfig, resume: str | None) -> Path | None:
    """The checkpoint a ``--resume`` means: a path as given; ``last`` (``--resume`` without a value) is
    ``last.ckpt`` of ``run.version``, or of the newest run of the experiment when no version is set. Every rank
    resolves it the same way (nothing is created before it), and a missing file is an error, not a fresh start."""
    if resume is None:
        return None
    if resume != "last":
        path = Path(resume)
        if not path.is_file():
            raise TrainError(f"--resume {resume}: no such checkpoint file")
        return path
    exp_dir = Path(cfg.run.dir) / cfg.name
    if cfg.run.version:
        path = exp_dir / cfg.run.version / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise TrainError(f"--resume: {path} does not exist (run.version={cfg.run.version}); "
                             f"give a checkpoint path: --resume PATH")
        return path
    runs = sorted(exp_dir.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise TrainError(f"--resume: no run of {cfg.name} under {exp_dir} has a last.ckpt; give a checkpoint path")
    return runs[-1]


def choose_run_dir(cfg: DictConfig, resume: Path | None) -> Path | None:
    """The run's directory, chosen by global rank 0 only: ``run.version``; else the run a resumed checkpoint
    belongs to (``<run.dir>/<experiment>/<version>/checkpoints/``); else the next free ``version_<n>``. Other
    ranks return ``run.version``'s directory or None, and learn rank 0's choice once the process group is up
    (``RunDirSync``), so a launch on several nodes never makes two run directories."""
    exp_dir = Path(cfg.run.dir) / cfg.name
    if cfg.run.version:
        return exp_dir / cfg.run.version
    if resume is not None and resume.resolve().parent.name == "checkpoints" \
            and resume.resolve().parent.parent.parent == exp_dir.resolve():
        return exp_dir / resume.resolve().parent.parent.name
    return exp_dir / next_version(exp_dir) if is_launch_rank_zero() else None


class RunDirSync(Callback):
    """Hands rank 0's run directory to every rank as soon as the process group exists (``setup``), and refuses
    ranks that were told another ``run.version``. Lightning's checkpoint callback broadcasts its own directory;
    this keeps every rank's summary, and any later use of the run dir, on the one directory."""

    def __init__(self, run_dir: Path | None) -> None:
        self.run_dir = run_dir

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        chosen = trainer.strategy.broadcast(None if self.run_dir is None else str(self.run_dir), src=0)
        if self.run_dir is not None and Path(chosen) != self.run_dir:
            raise TrainError(f"rank {trainer.global_rank} was given run dir {self.run_dir}, rank 0 {chosen}: "
                             "launch every rank with the same run.version")
        self.run_dir = Path(chosen)


def build_trainer(cfg: DictConfig, run_dir: Path | None, **overrides: Any) -> L.Trainer:
    """The Trainer writing into ``run_dir`` (None on a rank that learns it from rank 0: such a rank writes nothing
    itself; Lightning's loggers and checkpoints write from rank 0 only)."""
    sync = RunDirSync(run_dir)
    run_dir = run_dir or Path(cfg.run.dir) / cfg.name / "rank0-chooses"
    ckpt_dir = run_dir / "checkpoints"
    callbacks = [
        sync,
        PeriodicCheckpoint(dirpath=ckpt_dir, filename="epoch{epoch}-step{step}", auto_insert_metric_name=False,
                           save_last=True, save_top_k=-1 if cfg.run.keep_checkpoints == "all" else 0,
                           every_n_train_steps=cfg.run.ckpt_every_n_steps),
        LearningRateMonitor(logging_interval="step"),
        DataTime(),
    ]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    loggers = [
        RunCSVLogger(save_dir=str(run_dir), name="", version=""),
        TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""),
    ]
    kwargs = {**OmegaConf.to_container(cfg.trainer), **overrides}
    # the DataModule shards data itself (no padded DistributedSampler, resumable order)
    kwargs["use_distributed_sampler"] = False
    return L.Trainer(default_root_dir=str(run_dir), callbacks=callbacks, logger=loggers, **kwargs)


def training_cost(cfg: DictConfig, module: VTPModule, trainer: L.Trainer, wall_s: float, resumed: bool
                  ) -> dict[str, Any]:
    """What a run cost, for the comparison table: parameters, optimizer steps, training samples seen (steps x
    batch x ranks x accumulation: every loader drops its last partial batch) and the wall time of ``fit`` (of this
    process only when resumed)."""
    from vtp_bench.models.params import parameter_counts

    steps = int(trainer.global_step)
    accumulate = int(cfg.trainer.get("accumulate_grad_batches", 1) or 1)
    return {**parameter_counts(module.method), "optimizer_steps": steps,
            "samples_seen": steps * int(cfg.data.batch_size) * int(trainer.world_size) * accumulate,
            "train_wall_s": round(wall_s, 1), "wall_since_resume": resumed, "world_size": int(trainer.world_size)}


def train_seeds(cfg: DictConfig, seeds: list[int]) -> list[dict[str, Any]]:
    """One run per training seed, each in its own run dir: ``<run.version or "seed">-seed<k>`` (``seed<k>`` when
    no version is set), so that ``compare`` can fold them into one row (the results differ only in ``seed``)."""
    summaries = []
    for k in seeds:
        version = f"{cfg.run.version}-seed{k}" if cfg.run.version else f"seed{k}"
        summaries.append(train(apply_overrides(cfg, [f"seed={int(k)}", f"run.version={version}"])))
    return summaries


def train(cfg: DictConfig, resume: str | None = None) -> dict[str, Any]:
    """Fit, then validate the final weights; returns a summary (run dir, checkpoint, metrics, skipped videos)."""
    # frozen towers stay in eval mode on purpose (no dropout in fixed features): not worth a warning
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    for name in cfg.data.train:  # fail before a run dir is made when the data is not there
        if cfg.data.format == "webdataset":
            from vtp_bench.data.shards import load_shard_set, locate_shards

            load_shard_set(*locate_shards(name, cfg.data.root, "train"))
        else:
            locate(name, cfg.data.root, "train")
    locate(cfg.data.eval[0], cfg.data.root, cfg.data.val_split)
    L.seed_everything(cfg.seed, workers=True)
    resume_path = resume_checkpoint(cfg, resume)
    run_dir = choose_run_dir(cfg, resume_path)
    if run_dir is not None and is_launch_rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    dm = VideoTextDataModule(cfg)
    module = VTPModule(to_dict(cfg))
    init_report = None
    if cfg.init.checkpoint and resume_path is None:  # a resumed run's weights come from its own checkpoint
        from vtp_bench.models.checkpoints import load_official

        init_report = load_official(module.method, cfg.init.checkpoint, cfg.init.source,
                                    temporal_fix=cfg.init.temporal_fix, strict=cfg.init.strict, trust=cfg.init.trust)
    trainer = build_trainer(cfg, run_dir)
    if init_report is not None and trainer.is_global_zero:
        print(f"init from {cfg.init.checkpoint}: {init_report.summary()}", flush=True)
    if resume_path is not None and trainer.is_global_zero:
        print(f"resuming from {resume_path}", flush=True)
    t_fit = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=resume_path)
    wall = time.perf_counter() - t_fit
    run_dir = next(c for c in trainer.callbacks if isinstance(c, RunDirSync)).run_dir
    skipped = sorted(set(module.skipped_videos))
    summary = {
        "seed": int(cfg.seed),
        "run_version": run_dir.name,
        "cost": training_cost(cfg, module, trainer, wall, resume_path is not None),
        "run_dir": str(run_dir),
        "checkpoint": str(run_dir / "checkpoints" / "last.ckpt"),
        "global_step": trainer.global_step,
        "val_metrics": module.last_metrics,
        "init": init_report.to_dict() if init_report else None,
        "steps_per_dataset": dict(Counter(module.dataset_steps)),
        "steps_per_rank": module.steps_per_rank,
        "skipped_videos": len(module.skipped_videos),
        "skipped_video_ids": skipped,
        "skipped_errors": module.skipped_errors,
        "world_size": trainer.world_size,
        "weights_sha256_per_rank": module.weights_digests,
        "trainable_params_unchanged": module.unchanged_params,
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
        if module.unchanged_params:
            print(f"WARNING: {len(module.unchanged_params)} trainable parameter tensors never changed during training "
                  f"(a learning rate of 0, or a part that gets no gradient?), e.g. {module.unchanged_params[:5]}")
        if len(set(module.weights_digests)) > 1:
            print(f"WARNING: the ranks ended with different weights ({module.weights_digests}); DDP replicas "
                  "diverged, which is a bug (please report it with the run's config)")
    summary["is_global_zero"] = trainer.is_global_zero
    return summary
