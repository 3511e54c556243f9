"""Checkpoint -> dataset split -> embeddings -> metrics -> results JSON (one schema for every method)."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import lightning as L

from vtp_bench import __version__
from vtp_bench.config import apply_overrides, config_from_dict, load_config, to_dict
from vtp_bench.data.datamodule import VideoTextDataModule
from vtp_bench.lit import VTPModule
from vtp_bench.models.checkpoints import CheckpointError, load_checkpoint, load_official
from vtp_bench.tasks.base import EvalTask

__all__ = ["CheckpointError", "evaluate", "load_checkpoint", "module_from_checkpoint"]


def sha256_of(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _official_config(path: Path, method: str | None, experiment: str | None, overrides: list[str]) -> dict[str, Any]:
    """The config to build for a released checkpoint: an experiment file, or a method at its defaults (paper
    size), plus the command-line overrides."""
    if experiment:
        return to_dict(load_config(experiment, overrides))
    if not method:
        raise CheckpointError(
            f"{path} is not a vtp_bench checkpoint (no hyper_parameters.config); to score released weights "
            "(Frozen-in-Time, MILES, RegionLearner, CLIP), say which model to build: --method NAME or "
            "--experiment NAME"
        )
    return to_dict(apply_overrides(config_from_dict({"name": f"{method}_official", "method": {"name": method}}),
                                   overrides))


def module_from_checkpoint(
    path: str | Path,
    overrides: list[str] = (),
    trust: bool = False,
    source: str | None = None,
    method: str | None = None,
    experiment: str | None = None,
) -> VTPModule:
    """A vtp_bench checkpoint rebuilds its own config; any other file is a released checkpoint (source detected
    or given) loaded into the model built from ``experiment`` or ``method`` (see models.checkpoints)."""
    ckpt = load_checkpoint(path, trust)
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    ours = isinstance(hparams, dict) and "config" in hparams and "state_dict" in ckpt
    if ours and source in (None, "vtp_bench") and not (method or experiment):
        config = hparams["config"]
        if overrides:
            config = to_dict(apply_overrides(config_from_dict(config), overrides))
        module = VTPModule(config)
        module.load_state_dict(ckpt["state_dict"])
        module.checkpoint_step = ckpt.get("global_step")
        return module
    if source == "vtp_bench":
        raise CheckpointError(f"{path} is not a vtp_bench checkpoint (no hyper_parameters.config)")
    module = VTPModule(_official_config(Path(path), method, experiment, list(overrides)))
    init = module.cfg.init
    module.official_load_report = load_official(module.method, ckpt, source, temporal_fix=init.temporal_fix,
                                                strict=init.strict)
    return module


def training_record(ckpt: str | Path, module: VTPModule) -> dict[str, Any]:
    """The scored checkpoint's training seed, run version and cost (``train.training_cost``, from the run's
    ``summary.json`` beside ``checkpoints/``), so a results file says what its numbers cost and which seed made
    them. A released checkpoint has neither seed nor run (None); its parameters are counted from the model."""
    from vtp_bench.models.params import parameter_counts

    cost: dict[str, Any] = parameter_counts(module.method)
    if getattr(module, "official_load_report", None) is not None:
        return {"seed": None, "run_version": None, "cost": cost}
    path = Path(ckpt)
    run_dir = path.resolve().parent.parent if path.parent.name == "checkpoints" else None
    summary: dict[str, Any] = {}
    if run_dir is not None and (run_dir / "summary.json").is_file():
        try:
            summary = json.loads((run_dir / "summary.json").read_text())
        except (OSError, json.JSONDecodeError):
            summary = {}
    cost.update({k: v for k, v in (summary.get("cost") or {}).items() if k not in cost})
    step = getattr(module, "checkpoint_step", None)
    if step is not None and cost.get("optimizer_steps") not in (None, step):  # an earlier checkpoint of the run
        per_step = cost.get("samples_seen", 0) / max(1, cost["optimizer_steps"])
        cost.update(optimizer_steps=int(step), samples_seen=int(per_step * step), train_wall_s=None)
    version = summary.get("run_version") or (run_dir.name if run_dir else module.cfg.run.version)
    return {"seed": int(module.cfg.seed), "run_version": version, "cost": cost}


def evaluate(
    ckpt: str | Path,
    dataset: str,
    split: str | None = None,
    out: str | Path | None = None,
    allow_missing: bool = False,
    overrides: list[str] = (),
    trust_checkpoint: bool = False,
    accelerator: str = "auto",
    devices: int = 1,
    ckpt_source: str | None = None,
    method: str | None = None,
    experiment: str | None = None,
    task: str | EvalTask = "retrieval",
    name: str | None = None,
) -> dict[str, Any]:
    """Score one checkpoint on one split with one evaluation task (``tasks/``: retrieval, zeroshot_cls,
    grounding); write the results JSON when ``out`` is given. ``split=None``: the task's default for the dataset.
    A released checkpoint (not written by vtp_bench) needs ``method`` or ``experiment``; its source is detected
    unless given. ``dataset`` is a registered name or a manifest file / folder (your own data), which ``name``
    renames in the results (default: its stem). ``task`` may be an EvalTask instance (``vtp-bench embed``: the
    retrieval task that also keeps the embeddings it scored)."""
    overrides = list(overrides) + ([f"eval.allow_missing={allow_missing}"] if allow_missing else [])
    module = module_from_checkpoint(ckpt, overrides, trust_checkpoint, ckpt_source, method, experiment)
    cfg = module.cfg
    dm = VideoTextDataModule(cfg, eval_dataset=dataset, eval_split=split, allow_missing=allow_missing,
                             task=task if isinstance(task, str) else task.name, eval_name=name)
    if not isinstance(task, str):
        dm.test_task = task
    trainer = L.Trainer(accelerator=accelerator, devices=devices, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, precision=cfg.trainer.get("precision", "32-true"),
                        use_distributed_sampler=False, strategy="ddp" if devices > 1 else "auto")
    trainer.test(module, datamodule=dm, verbose=False)
    src = dm.test_source
    result = {
        "method": cfg.method.name,
        "experiment": cfg.name,
        "checkpoint": str(ckpt),
        "checkpoint_source": getattr(getattr(module, "official_load_report", None), "source", "vtp_bench"),
        "checkpoint_load": getattr(getattr(module, "official_load_report", None), "to_dict", dict)(),
        **training_record(ckpt, module),
        "dataset": src.name,
        "split": src.split if src.from_path else dm.eval_split,
        "manifest": str(src.manifest),
        "manifest_sha256": sha256_of(src.manifest),
        **module.last_eval_info,
        "frames": cfg.data.eval_num_frames or cfg.data.num_frames,
        "sampler": cfg.data.eval_sampling,
        "img_size": cfg.data.img_size,
        "decode_size": cfg.data.decode_size,
        "decoder": "pyav",
        "metrics": module.last_metrics,
        "vtp_bench_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    result["devices"] = trainer.world_size
    if out is not None and trainer.is_global_zero:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    return result
