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
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from vtp_bench.atomic import AtomicCheckpointIO, atomic_write_text
from vtp_bench.config import apply_overrides, to_dict
from vtp_bench.data.catalog import locate
from vtp_bench.data.datamodule import VideoTextDataModule
from vtp_bench.data_time import DataTime
from vtp_bench.distributed import is_launch_rank_zero
from vtp_bench.lit import VTPModule
from vtp_bench.quiet import model_summary_callback, quiet_lightning
from vtp_bench.registry import DATA_FORMATS
from vtp_bench.runlog import log_final, make_loggers


class PeriodicCheckpoint(ModelCheckpoint):
    """At the end of every training epoch and, when ``every_n_train_steps`` is set, every N steps as well
    (Lightning's ModelCheckpoint takes one trigger or the other, and by default saves at the end of *validation*,
    so epochs without validation, ``check_val_every_n_epoch > 1``, would get no checkpoint); ``last.ckpt`` always
    holds the newest."""

    def __init__(self, every_n_train_steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(every_n_train_steps=every_n_train_steps, save_on_train_epoch_end=True, **kwargs)
        self._every_n_epochs = 1


class SigtermCheckpoint(Callback):
    """SIGTERM (what SLURM and most schedulers send before they kill a job): Lightning finishes the current step
    and stops with a ``SIGTERMException``; this saves ``last.ckpt`` at that step first (``on_exception``, before
    teardown), so ``--resume`` continues exactly. A SIGTERM during validation is held until the validation ends:
    Lightning would stop mid-validation, and a checkpoint there cannot resume (the embeddings gathered so far
    live in memory only)."""

    def __init__(self) -> None:
        self.saved: Path | None = None
        self._held = False
        self.signal = "SIGTERM"  # what stopped the run: SIGTERM, or SIGINT (Ctrl-C) routed the same way
        self._previous_sigint: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The first Ctrl-C stops the run as SIGTERM does (after the current step, with a checkpoint and the
        summary); a second one aborts at once (Lightning's KeyboardInterrupt: nothing saved)."""
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return

        def stop(signum: int, frame: Any) -> None:
            connector = getattr(trainer, "_signal_connector", None)
            if connector is None or connector.received_sigterm:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            self.signal, connector.received_sigterm = "SIGINT", True
            print("\nCtrl-C: stopping after this step, saving last.ckpt (press Ctrl-C again to abort at once)",
                  flush=True)

        self._previous_sigint = signal.signal(signal.SIGINT, stop)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def _restore(self) -> None:
        import signal

        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        connector = getattr(trainer, "_signal_connector", None)
        if trainer.state.fn == TrainerFn.FITTING and trainer.received_sigterm and connector is not None:
            connector.received_sigterm, self._held = False, True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._held:
            trainer._signal_connector.received_sigterm, self._held = True, False

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()
        if isinstance(exception, SIGTERMException) and trainer.training and trainer.checkpoint_callback:
            path = Path(trainer.checkpoint_callback.dirpath) / "last.ckpt"
            trainer.save_checkpoint(path)
            self.saved = path


class TrainInterrupted(SystemExit):
    """A run stopped by SIGTERM (or a first Ctrl-C) after saving ``last.ckpt``: exit status 143 (128 + SIGTERM) or
    130 (128 + SIGINT), as the shell reports a process the signal ended, so schedulers and scripts see that the run
    did not finish."""

    def __init__(self, signal_name: str = "SIGTERM") -> None:
        super().__init__(130 if signal_name == "SIGINT" else 143)


def keep_newest(keep: str | int) -> dict[str, Any]:
    """ModelCheckpoint arguments for ``run.keep_checkpoints``: without a monitor it keeps all (-1), none (0) or
    one, so N newest is top-N of the global step (ModelCheckpoint always offers ``step`` as a metric)."""
    if keep == "all":
        return {"save_top_k": -1}
    if keep == "last" or int(keep) == 0:
        return {"save_top_k": 0}
    return {"save_top_k": int(keep), "monitor": "step", "mode": "max"}


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
        if path.is_dir():  # a run dir: its last.ckpt
            path = path / "checkpoints" / "last.ckpt" if (path / "checkpoints").is_dir() else path / "last.ckpt"
        if not path.is_file():
            raise TrainError(f"--resume {resume}: no such checkpoint file (give a .ckpt, or a run dir with "
                             "checkpoints/last.ckpt)")
        return _readable(path)
    exp_dir = Path(cfg.run.dir) / cfg.name
    if cfg.run.version:
        path = exp_dir / cfg.run.version / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise TrainError(f"--resume: {path} does not exist (run.version={cfg.run.version}); "
                             f"give a checkpoint path: --resume PATH")
        return _readable(path)
    runs = sorted(exp_dir.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise TrainError(f"--resume: no run of {cfg.name} under {exp_dir} has a last.ckpt; give a checkpoint path")
    return _readable(runs[-1])


def _readable(path: Path) -> Path:
    """``path`` if it is a complete ``torch.save`` archive, else a TrainError that says so and points at the run's
    other checkpoints. Only the zip's central directory (at its end) is read: a truncated or foreign file fails
    here, in milliseconds, instead of after the run is set up (Lightning reads the whole file once, later)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            ok = any(name.endswith("data.pkl") for name in z.namelist())
    except (zipfile.BadZipFile, OSError):
        ok = False
    if not ok:
        raise TrainError(f"--resume {path}: cannot read checkpoint {path} (not a complete torch.save archive: torn "
                         f"by a crash or a full disk?); resume from another checkpoint of the run "
                         f"({path.parent}/epoch*.ckpt) with --resume PATH")
    return path


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


# keys a resume may change: where the run writes, how long it trains, and how (not what) it computes
RESUME_PLACEMENT = ("run.dir", "run.version")
RESUME_MAY_CHANGE = ("trainer.max_steps", "trainer.max_epochs", "trainer.devices", "trainer.num_nodes",
                     "data.num_workers", "trainer.enable_progress_bar")


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` for every leaf of a config (lists and empty dicts are leaves)."""
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True)
    if isinstance(node, dict) and node:
        return {k: v for key, sub in node.items() for k, v in _leaves(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def saved_run_config(ckpt: Path) -> DictConfig:
    """The resolved config of the run a checkpoint belongs to: its run dir's ``config.yaml`` (which records the
    changes of earlier resumes), else the checkpoint's ``hyper_parameters.config``."""
    from vtp_bench.config import config_from_dict

    run_dir = ckpt.resolve().parent.parent if ckpt.resolve().parent.name == "checkpoints" else None
    if run_dir is not None and (run_dir / "config.yaml").is_file():
        return config_from_dict(OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml")))
    import torch

    try:
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]["config"]
    except Exception as e:
        raise TrainError(f"--resume {ckpt}: cannot read the run's config from the checkpoint ({e}) and there is "
                         "no config.yaml in its run dir") from None
    return config_from_dict(saved)


def resumed_config(cfg: DictConfig, ckpt: Path, overrides: list[str] | None) -> tuple[DictConfig, dict[str, list]]:
    """The config a resumed run continues with: the run's own (``saved_run_config``), so a bare ``--resume`` keeps
    every override the run was started with. ``overrides`` are the command line's ``key=value`` (None: every key of
    ``cfg`` counts as given, for callers of ``train``). A given value that differs from the run's is refused,
    naming the keys, unless the key is in ``RESUME_MAY_CHANGE`` (then applied and returned as ``{key: [old,
    new]}``) or ``RESUME_PLACEMENT`` (where the resumed run writes)."""
    saved = saved_run_config(ckpt)
    if saved.name != cfg.name:
        raise TrainError(f"--resume {ckpt}: a run of experiment {saved.name!r}, not {cfg.name!r}; resume it with "
                         f"`vtp-bench train {saved.name} --resume {ckpt}`")
    given = _leaves(OmegaConf.from_dotlist(list(overrides))) if overrides is not None else _leaves(cfg)
    old, new = _leaves(saved), _leaves(cfg)
    differ = sorted(k for k in given if k != "name" and old.get(k, "<absent>") != new.get(k, "<absent>"))
    refused = [k for k in differ if k not in RESUME_MAY_CHANGE and k not in RESUME_PLACEMENT]
    if refused:
        shown = ", ".join(f"{k} ({old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r})" for k in refused)
        raise TrainError(f"--resume continues a run with its own config ({ckpt}); these overrides change it: {shown}. "
                         f"Leave them out, or start a new run. A resume may change only "
                         f"{', '.join(RESUME_MAY_CHANGE + RESUME_PLACEMENT)}")
    for key in differ:  # values cfg already holds, so the schema took them
        OmegaConf.update(saved, key, new.get(key), merge=False, force_add=True)
    changes = {k: [old.get(k), new.get(k)] for k in differ if k not in RESUME_PLACEMENT}
    return saved, changes


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
                           save_last=True, every_n_train_steps=cfg.run.ckpt_every_n_steps,
                           **keep_newest(cfg.run.keep_checkpoints)),
        LearningRateMonitor(logging_interval="step"),
        DataTime(),
        SigtermCheckpoint(),
    ]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    loggers = make_loggers(cfg, run_dir)
    kwargs = {**OmegaConf.to_container(cfg.trainer), **overrides}
    # the DataModule shards data itself (no padded DistributedSampler, resumable order)
    kwargs["use_distributed_sampler"] = False
    quiet_lightning()
    if kwargs.pop("enable_model_summary", True):  # into the run dir, not the console (printed by train --verbose)
        callbacks.append(model_summary_callback(lambda: sync.run_dir))
    kwargs["enable_model_summary"] = False  # Lightning's own one would print it
    return L.Trainer(default_root_dir=str(run_dir), callbacks=callbacks, logger=loggers,
                     plugins=[AtomicCheckpointIO()], **kwargs)  # a full disk never leaves a torn checkpoint


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


def validate_final_weights(cfg: DictConfig, trainer: L.Trainer, module: VTPModule, dm: VideoTextDataModule) -> str:
    """The summary's ``val_metrics`` score the weights the run ends with: when the last validation was of earlier
    weights (``max_steps`` ends mid-epoch, ``check_val_every_n_epoch > 1``) or none ran, validate once more.
    Returns what the summary says of it; ``trainer.limit_val_batches=0`` turns validation off, and says so."""
    if cfg.trainer.get("limit_val_batches", 1.0) == 0:
        return "off (trainer.limit_val_batches=0)"
    if module.last_metrics and module.last_metrics_step == trainer.global_step:
        return "final weights"
    trainer.validate(module, datamodule=dm, verbose=False)
    if not module.last_metrics:  # cannot happen with a non-empty val manifest; never record an empty validation
        raise TrainError(f"the validation of the final weights scored nothing (split {cfg.data.val_split!r} of "
                         f"{cfg.data.eval[0]!r}); check its manifest and data.eval_batch_size")
    return "final weights"


def train(cfg: DictConfig, resume: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Fit, then validate the final weights; returns a summary (run dir, checkpoint, metrics, skipped videos).
    A resumed run continues with its own config (``resumed_config``; ``overrides`` are the command line's)."""
    # frozen towers stay in eval mode on purpose (no dropout in fixed features): not worth a warning
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    resume_path = resume_checkpoint(cfg, resume)
    changes: dict[str, list] = {}
    if resume_path is not None:
        cfg, changes = resumed_config(cfg, resume_path, overrides)
    from vtp_bench.trainer_check import check_trainer_settings

    quiet_lightning()
    check_trainer_settings(to_dict(cfg)["trainer"])  # before a run dir exists (and before the data is looked up)
    DATA_FORMATS.get(cfg.data.format)(cfg).check()  # fail before a run dir is made when the data is not there
    val = locate(cfg.data.eval[0], cfg.data.root, cfg.data.val_split)
    DATA_FORMATS.get(cfg.data.eval_format)(cfg).check_eval(val)
    dm = VideoTextDataModule(cfg)
    dm.setup("validate")  # the validation task reads its set now: a manifest it cannot use leaves no run dir
    L.seed_everything(cfg.seed, workers=True)
    run_dir = choose_run_dir(cfg, resume_path)
    if run_dir is not None and is_launch_rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume_path is None or changes or not (run_dir / "config.yaml").is_file():
            atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
        if resume_path is not None:  # one line per resume: from where, and what it changed
            with open(run_dir / "resumes.jsonl", "a") as f:
                f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "checkpoint": str(resume_path),
                                    "changed": changes}) + "\n")
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
        shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
        print(f"resuming from {resume_path}" + (f" (changed: {shown})" if shown else ""), flush=True)
    t_fit = time.perf_counter()
    interrupted = None
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=resume_path)
    except SIGTERMException:  # last.ckpt is saved (SigtermCheckpoint); write the summary, then exit 143
        interrupted = next(c for c in trainer.callbacks if isinstance(c, SigtermCheckpoint)).signal
        if trainer.world_size == 1:  # what on_train_end gathers (across ranks it could wait on a stopped one)
            module.on_train_end()
    wall = time.perf_counter() - t_fit
    validation = validate_final_weights(cfg, trainer, module, dm) if interrupted is None else "interrupted"
    run_dir = next(c for c in trainer.callbacks if isinstance(c, RunDirSync)).run_dir
    skipped = sorted(set(module.skipped_videos))
    summary = {
        "seed": int(cfg.seed),
        "run_version": run_dir.name,
        "cost": training_cost(cfg, module, trainer, wall, resume_path is not None),
        "run_dir": str(run_dir),
        "checkpoint": str(run_dir / "checkpoints" / "last.ckpt"),
        "global_step": trainer.global_step,
        "val_metrics": module.last_metrics or None,  # never {}: null, and "validation" says why
        "val_step": module.last_metrics_step,
        "validation": validation,
        "init": init_report.to_dict() if init_report else None,
        "steps_per_dataset": dict(Counter(module.dataset_steps)),
        "steps_per_rank": module.steps_per_rank,
        "skipped_videos": len(module.skipped_videos),
        "skipped_video_ids": skipped,
        "skipped_errors": module.skipped_errors,
        "world_size": trainer.world_size,
        "weights_sha256_per_rank": module.weights_digests,
        "trainable_params_unchanged": module.unchanged_params,
        "interrupted": interrupted,  # "SIGTERM": stopped early, resume from "checkpoint"
    }
    if trainer.is_global_zero:
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
        log_final(list(trainer.loggers), module.last_metrics, run_dir / "summary.json", trainer.global_step)
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
    if interrupted:
        saved = next(c for c in trainer.callbacks if isinstance(c, SigtermCheckpoint)).saved
        if trainer.is_global_zero:
            step = trainer.global_step
            where = (f"saved {saved} at step {step}" if saved else
                     f"could not save a checkpoint at step {step}; the newest is {summary['checkpoint']}")
            print(f"\nINTERRUPTED by {interrupted}: {where}; continue with `vtp-bench train {cfg.name} "
                  f"run.dir={cfg.run.dir} run.version={run_dir.name} --resume`", flush=True)
        raise TrainInterrupted(interrupted)
    summary["is_global_zero"] = trainer.is_global_zero
    return summary
