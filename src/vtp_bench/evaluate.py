"""Checkpoint -> dataset split -> embeddings -> metrics -> results JSON (one schema for every method)."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Sequence

from vtp_bench import __version__
from vtp_bench.config import apply_overrides, config_from_dict, load_config, to_dict
from vtp_bench.data.datamodule import VideoTextDataModule
from vtp_bench.lit import VTPModule
from vtp_bench.models.checkpoints import CheckpointError, load_checkpoint, load_official
from vtp_bench.quiet import quiet_lightning, status
from vtp_bench.tasks.base import EvalTask

__all__ = ["CheckpointError", "EvaluationError", "evaluate", "load_checkpoint", "module_from_checkpoint"]


class EvaluationError(RuntimeError):
    """An evaluation that cannot give a result (nothing was scored): no results file is written."""


class ResultsExistError(EvaluationError):
    """``out`` holds another evaluation's results: refused before scoring, so no run silently replaces another's."""


def refuse_existing(out: Path, flag: str = "--overwrite") -> None:
    """Raise ResultsExistError when ``out`` exists: checked before an evaluation runs (minutes of work)."""
    if out.exists():
        raise ResultsExistError(f"{out} exists (written by an earlier run); pass {flag} to replace it, or choose "
                                "another --out")


def write_results(out: Path, result: dict[str, Any], overwrite: bool) -> Path:
    """Write the results JSON atomically; returns the file written. Without ``overwrite``, when another run wrote
    ``out`` meanwhile, these results go to ``<stem>.<n>.json`` beside it (nothing lost, nothing replaced)."""
    import sys

    from vtp_bench.atomic import atomic_write_text

    text = json.dumps(result, indent=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    if overwrite:
        return atomic_write_text(out, text)
    for n in range(1000):
        path = out if n == 0 else out.with_name(f"{out.stem}.{n}{out.suffix}")
        try:
            atomic_write_text(path, text, overwrite=False)
        except FileExistsError:
            continue
        if n:
            print(f"note: {out} was written by another evaluation meanwhile; these results are in {path}",
                  file=sys.stderr)
        return path
    raise ResultsExistError(f"{out} and {out.stem}.1..999{out.suffix} all exist; choose another --out")


def sha256_of(path: Path) -> str:
    """The file's sha256; an exported folder's is its weights file's (``model.safetensors``)."""
    import hashlib

    from vtp_bench.export import WEIGHTS, is_exported

    path = Path(path) / WEIGHTS if is_exported(path) else Path(path)
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
    """A vtp_bench checkpoint (a ``.ckpt``, or a folder of ``vtp-bench export``) rebuilds its own config; any other
    file is a released checkpoint (source detected or given) loaded into the model built from ``experiment`` or
    ``method`` (see models.checkpoints)."""
    from vtp_bench.export import WEIGHTS, is_exported, read_exported

    if is_exported(path):
        config, state = read_exported(path)
        ckpt: Any = {"hyper_parameters": {"config": config}, "state_dict": state}
    elif Path(path).is_dir():
        last = Path(path) / "checkpoints" / "last.ckpt"
        hint = f"; it is a run dir: give {last}" if last.is_file() else ""
        raise CheckpointError(f"{path} is a folder but not one `vtp-bench export` wrote (no {WEIGHTS} and "
                              f"config.yaml); give a .ckpt / .pth file or an exported folder{hint}")
    else:
        ckpt = load_checkpoint(path, trust)
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    ours = isinstance(hparams, dict) and "config" in hparams and "state_dict" in ckpt
    if ours and source in (None, "vtp_bench"):
        config = hparams["config"]
        trained = config.get("method", {}).get("name")
        if experiment or (method and method != trained):
            raise CheckpointError(
                f"{path} is a vtp_bench checkpoint of method {trained!r} (experiment {config.get('name')!r}): it "
                "rebuilds its own model, so --method / --experiment (which say what to build for a released "
                "file) do not apply; drop them")
        if overrides:
            config = to_dict(apply_overrides(config_from_dict(config), overrides))
            if config["method"]["name"] != trained:
                raise CheckpointError(f"{path} holds a {trained!r} model; method.name={config['method']['name']} "
                                      "would build another method, which its weights do not fit")
        module = VTPModule(config)
        try:
            module.load_state_dict(ckpt["state_dict"])
        except RuntimeError as e:
            first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))
            raise CheckpointError(f"{path}: the overrides {list(overrides)} build a model its weights do not fit "
                                  f"({first}); a checkpoint loads into the model it was trained as") from None
        module.checkpoint_step = ckpt.get("global_step")
        return module
    if source == "vtp_bench":
        raise CheckpointError(f"{path} is not a vtp_bench checkpoint (no hyper_parameters.config)")
    if ours:  # a vtp_bench checkpoint with another --ckpt-source
        raise CheckpointError(f"{path} is a vtp_bench checkpoint: it rebuilds its own model, so --ckpt-source "
                              f"{source!r} (the layout of a released file) does not apply; drop it")
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


def results_file(out: Path, task: str, tasks: int) -> Path:
    """Where one task's results go: ``out`` itself for one task, ``<stem>.<task><suffix>`` beside it for several."""
    return out if tasks == 1 else out.with_name(f"{out.stem}.{task}{out.suffix or '.json'}")


def evaluate(ckpt: str | Path, dataset: str, split: str | None = None, out: str | Path | None = None, *,
             task: str | EvalTask = "retrieval", **options: Any) -> dict[str, Any]:
    """Score one checkpoint on one split with one evaluation task (a registered name, ``tasks/``: retrieval,
    zeroshot_cls, grounding, multiple_choice, or a plugin's): ``evaluate_tasks`` with one task (``options``: its
    keyword arguments), its one result."""
    return evaluate_tasks(ckpt, dataset, [task], split, out, **options)[0]


def evaluate_tasks(
    ckpt: str | Path,
    dataset: str,
    tasks: Sequence[str | EvalTask],
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
    name: str | None = None,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Score one checkpoint on one dataset with each of ``tasks``, every clip the tasks share decoded and encoded
    once (``data.evalset.SharedClips``: retrieval and zero-shot classification of one test split share all of
    theirs); one result per task, each as ``vtp-bench eval --task`` of that task alone would give it. ``split=None``:
    each task's default for the dataset. A released checkpoint (not written by vtp_bench) needs ``method`` or
    ``experiment``; its source is detected unless given. ``dataset`` is a registered name or a manifest file / folder
    (your own data), which ``name`` renames in the results (default: as ``locate``). A task may be an EvalTask
    instance (``vtp-bench embed``: the retrieval task that also keeps the embeddings it scored). With ``out``, each
    task's results JSON is written (``results_file``: ``out`` for one task, ``<stem>.<task>.json`` for several); an
    existing one is refused before scoring unless ``overwrite`` (see ``write_results``);
    ``result["results_file"]`` (not in the file) is the file written."""
    names = [t if isinstance(t, str) else t.name for t in tasks]
    if len(set(names)) != len(names) or not names:
        raise EvaluationError(f"tasks {names}: give each task once")
    outs = [results_file(Path(out), t, len(names)) for t in names] if out is not None else []
    if not overwrite:
        for path in outs:
            refuse_existing(path)
    overrides = list(overrides) + ([f"eval.allow_missing={allow_missing}"] if allow_missing else [])
    module = module_from_checkpoint(ckpt, overrides, trust_checkpoint, ckpt_source, method, experiment)
    cfg = module.cfg
    dm = VideoTextDataModule(cfg, eval_dataset=dataset, eval_split=split, allow_missing=allow_missing,
                             task=list(tasks), eval_name=name)
    quiet_lightning()
    what = ", ".join(f"{t.name} on split {s}" for t, s in zip(dm.test_tasks, dm.eval_splits))
    status(f"encoding {dataset} ({what}) with {cfg.method.name} ...")
    from vtp_bench.trainer_check import make_trainer

    trainer = make_trainer("--accelerator / --devices", accelerator=accelerator, devices=devices, logger=False,
                           enable_checkpointing=False, enable_model_summary=False,
                           precision=cfg.trainer.get("precision", "32-true"), use_distributed_sampler=False,
                           strategy="ddp" if devices > 1 else "auto")
    trainer.test(module, datamodule=dm, verbose=False)
    if not module.last_results:  # the loader yielded no batch: never write a results file that scored nothing
        raise EvaluationError(f"the evaluation of {ckpt} on {dataset} scored nothing: its loader yielded no batch "
                              f"(split(s) {dm.eval_splits}); check the manifest and data.eval_batch_size")
    common = {
        "method": cfg.method.name,
        "experiment": cfg.name,
        "checkpoint": str(ckpt),
        "checkpoint_source": getattr(getattr(module, "official_load_report", None), "source", "vtp_bench"),
        "checkpoint_load": getattr(getattr(module, "official_load_report", None), "to_dict", dict)(),
        **training_record(ckpt, module),
    }
    results = []
    for k, (task_obj, src) in enumerate(zip(dm.test_tasks, dm.test_sources)):
        metrics, info = module.last_results[task_obj.name]
        result = {
            **common,
            "dataset": src.name,
            "split": src.split if src.from_path else dm.eval_splits[k],
            "manifest": str(src.manifest),
            "manifest_sha256": sha256_of(src.manifest),
            **info,
            "frames": cfg.data.eval_num_frames or cfg.data.num_frames,
            "sampler": cfg.data.eval_sampling,
            "img_size": cfg.data.img_size,
            "decode_size": cfg.data.decode_size,
            **dm.eval_format.record(),  # data_format (how the clips were stored) and decoder
            "metrics": metrics,
            "vtp_bench_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "devices": trainer.world_size,
        }
        if outs and trainer.is_global_zero:
            result["results_file"] = str(write_results(outs[k], result, overwrite))
        results.append(result)
    return results
