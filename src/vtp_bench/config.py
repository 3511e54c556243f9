"""Experiment configs: component defaults <- experiments/<name>.yaml <- command-line ``key=value`` overrides.

The schema is typed (OmegaConf structured configs), so an unknown key or a wrong type is an error that
names the key. The method section is typed by the method's own ``Config`` dataclass, and the ``trainer``
section is checked against ``lightning.Trainer``'s arguments.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vtp_bench.choices import GATHER_MODES, LOGGERS, MIX_MODES, OPTIMIZER_NAMES, SAMPLINGS, SCHEDULERS, TEMPORAL_FIXES
from vtp_bench.errors import ConfigError
from vtp_bench.registry import METHODS, RegistryError, experiments_dir, list_experiments

__all__ = ["ConfigError", "apply_overrides", "checked", "choice", "config_from_dict", "load_config", "to_dict"]

REPO_ROOT = Path(__file__).resolve().parents[2]


def choice(default: Any, options: Sequence[Any], flag: str | None = None, help: str = "") -> Any:
    """A config field that takes one of ``options`` (also in a method's or a task's ``Config``): any other value is
    refused when the config is loaded, naming the key and the choices, not when the value is first used. ``flag``
    (a task's option): also a ``vtp-bench eval`` flag, with ``help``."""
    meta: dict[str, Any] = {"choices": tuple(options)}
    if flag:
        meta.update(flag=flag, help=help)
    return field(default=default, metadata=meta)


def checked(default: Any, test: Callable[[Any], bool], what: str) -> Any:
    """A config field whose value must pass ``test`` (``what`` it must be, for the error), checked when the config
    is loaded like the keys of ``VALUE_RULES``."""
    return field(default=default, metadata={"rule": (test, what)})


@dataclass
class DataConfig:
    train: list[str] = field(default_factory=lambda: ["synth"])  # dataset names (DATASETS registry)
    eval: list[str] = field(default_factory=lambda: ["synth"])
    root: str = "${oc.env:VTP_DATA_ROOT,data}"  # each dataset lives under <root>/<dataset>/
    val_split: str = "val"
    num_frames: int = 4
    eval_num_frames: Optional[int] = None  # frames per video in evaluation; null: num_frames (Prompt Switch 6/12)
    img_size: int = 224
    batch_size: int = 32  # per device
    eval_batch_size: int = 64
    num_workers: int = 4
    train_sampling: str = choice("rand", SAMPLINGS)
    eval_sampling: str = choice("uniform", SAMPLINGS)
    crop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0])  # RandomResizedCrop scale (Frozen)
    hflip: bool = True  # Frozen flips; captions that say "left"/"right" need hflip=false
    max_val_videos: Optional[int] = None  # validate during training on the first N videos only
    # several data.train datasets: round_robin (Frozen's zip) | proportional
    mix: str = choice("round_robin", MIX_MODES)
    decode_size: Optional[int] = None  # short side scaled in the decoder; null = native resolution (Frozen)
    decode_threads: int = 1  # decoder threads per clip (1 inside DataLoader workers)
    # detector region features per dataset (methods that read them, e.g. DemoVLP): a path template,
    # {video_id} / {stem} (video path without extension) / {split}, to a folder of 0.npz..n-1.npz per video
    regions: dict[str, str] = field(default_factory=dict)
    num_regions: int = 30  # regions per frame: the most confident boxes, edge-padded (DemoVLP: 30)
    # options of the per-item inputs (data/inputs/; a plugin's too), one section per input name:
    # data.inputs.<input>.<option>=..., checked by that input's Options when a dataset is built (the region inputs
    # read data.regions / data.num_regions above, grounding_clips the grounding task's clip length)
    inputs: dict[str, Any] = field(default_factory=dict)
    # how training clips are stored and read: a registered data format (data/formats/): files (a manifest's video
    # files) | webdataset (tar shards of `vtp-bench data shard` or video2dataset, under <root>/<name>/shards/<split>/;
    # docs/data_shards.md)
    format: str = "files"
    # how evaluation (validation and `vtp-bench eval`) reads its clips, whatever the training data is: files (the
    # benchmark's videos) | webdataset (the split's shards, `vtp-bench data shard <manifest> --once-per-video`)
    eval_format: str = "files"
    shuffle_buffer: int = 256  # webdataset: samples (raw bytes) per worker in the shuffle buffer


@dataclass
class OptimConfig:
    name: str = choice("adamw", OPTIMIZER_NAMES)
    lr: float = 3e-5  # Frozen-in-Time's fine-tuning learning rate
    weight_decay: float = 0.0  # not on biases, norms, embeddings (optim.no_decay_names)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    scheduler: str = choice("constant", SCHEDULERS)  # after warm-up; closed form in optim.lr_factor
    warmup_steps: int = 0  # linear warm-up over this many optimizer steps
    milestones: list[int] = field(default_factory=list)  # scheduler=step: optimizer steps where lr *= gamma
    gamma: float = 0.1


@dataclass
class LossConfig:
    # global: negatives from every rank, exact gradients | none: per-GPU negatives
    gather: str = choice("global", GATHER_MODES)


@dataclass
class RunConfig:
    dir: str = "runs"  # runs land in <dir>/<experiment>/<version>/
    version: Optional[str] = None  # None: version_<n>, the next free one
    ckpt_every_n_steps: Optional[int] = None
    # besides last.ckpt, checkpoints are saved at every epoch end (and every ckpt_every_n_steps steps); keep the
    # newest N of them (an integer >= 0), all of them ("all": resume anywhere), or none ("last" = 0)
    keep_checkpoints: Any = 3
    # trackers (Lightning's loggers): csv, tensorboard, wandb, mlflow (the last two: pip install vtp_bench[wandb] /
    # [mlflow]; WANDB_MODE=offline and MLFLOW_TRACKING_URI are read as usual; MLflow defaults to <run dir>/mlruns)
    loggers: list[str] = field(default_factory=lambda: ["csv", "tensorboard"])
    project: Optional[str] = None  # the wandb project / MLflow experiment (default: vtp_bench / the experiment)


@dataclass
class EvalConfig:
    """What every evaluation shares; each registered task adds its own section ``eval.<task>`` (its ``Config``:
    retrieval's v2t / protocol / rerank, grounding's clip_seconds, ...)."""

    split: str = "test"
    allow_missing: bool = False  # score a test set with missing videos (they are counted and reported)
    # the task that validates during training (on data.eval[0], split data.val_split): retrieval, or another
    # registered task (grounding: a grounding head validates on held-out timed queries)
    val_task: str = "retrieval"


@dataclass
class InitConfig:
    """Start training from a released checkpoint (Frozen-in-Time / MILES / RegionLearner / CLIP weights), loaded
    by ``models.checkpoints.load_official`` into the method before the first step (not when resuming)."""

    checkpoint: Optional[str] = None
    source: Optional[str] = None  # a checkpoint layout (`vtp-bench list`); null: detected from the keys
    # a file with fewer frames than the model: zeros | interp | bilinear (Frozen)
    temporal_fix: str = choice("zeros", TEMPORAL_FIXES)
    strict: bool = True  # false: keys the model has no place for are reported, not an error (official loaders)
    trust: bool = False  # allow arbitrary unpickling (trusted files only)


def _trainer_defaults() -> dict[str, Any]:
    return {
        "max_epochs": 10,
        "accelerator": "auto",
        "devices": 1,
        "precision": "32-true",
        "log_every_n_steps": 10,
        "num_sanity_val_steps": 0,
    }


@dataclass
class ExperimentConfig:
    name: str = "unnamed"
    seed: int = 0
    method: Any = None  # replaced by the method's Config dataclass
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    trainer: dict[str, Any] = field(default_factory=_trainer_defaults)
    run: RunConfig = field(default_factory=RunConfig)
    eval: Any = field(default_factory=EvalConfig)  # replaced by eval_schema(): one section per registered task
    init: InitConfig = field(default_factory=InitConfig)


def _experiment_file(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    candidate = experiments_dir() / f"{name_or_path}.yaml"
    if candidate.is_file() and candidate.parent == experiments_dir():  # tiny/<method>: test sizes, not experiments
        return candidate
    if p.suffix in (".yaml", ".yml") or len(p.parts) > 1:  # meant as a file
        raise ConfigError(f"experiment file {name_or_path} does not exist (an experiment is a name from `vtp-bench "
                          "list` or the path of a .yaml file)")
    known = ", ".join(list_experiments()) or "(none)"
    raise ConfigError(f"unknown experiment {name_or_path!r}; known experiments: {known} (files in {experiments_dir()})")


def _wrap(err: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(err, "full_key", None) or "?"
    msg = str(err).splitlines()[0]
    if "not in" in msg or "Key '" in msg and "not" in msg:
        return ConfigError(f"unknown config key {key!r} ({source}): {msg}")
    return ConfigError(f"bad value for config key {key!r} ({source}): {msg}")


def _clear_replaced_encoders(base: DictConfig, layer: Any) -> None:
    """An encoder section given in an experiment file (or a saved config) replaces the method's default
    one instead of being merged into it: a merge would keep, e.g., the default's ``preset`` under a
    different encoder. Command-line overrides still edit single keys."""
    given = (layer.get("method") if hasattr(layer, "get") else None) or {}
    for key in given:
        if key in base.method and isinstance(base.method[key], DictConfig) and "name" in base.method[key]:
            base.method[key] = {}


def method_schema(method_name: str) -> DictConfig:
    try:
        cls = METHODS.get(method_name)
    except RegistryError as e:
        raise ConfigError(f"method.name: {e}") from None
    return OmegaConf.structured(cls.Config)


def eval_schema() -> DictConfig:
    """``eval``: the keys every evaluation shares and one section per registered task, typed by its ``Config``."""
    from vtp_bench.registry import TASKS

    node = OmegaConf.structured(EvalConfig)
    OmegaConf.set_struct(node, False)
    for name in TASKS.names():
        node[name] = OmegaConf.structured(TASKS.get(name).Config)
    OmegaConf.set_struct(node, True)
    return node


def moved_eval_keys() -> dict[str, str]:
    """``eval.<key>`` of earlier versions (one flat section) -> the task section key it moved to, as the tasks
    declare (``EvalTask.moved``): saved runs and checkpoints keep loading."""
    from vtp_bench.registry import TASKS

    return {old: f"{name}.{new}" for name in TASKS.names() for old, new in TASKS.get(name).moved.items()}


def _move_eval_keys(layer: Any, source: str, quiet: bool = False) -> Any:
    """``layer`` (a dict or DictConfig) with flat ``eval.<key>`` of earlier versions moved into their task section;
    a note names each move (not for a saved config: ``quiet``)."""
    ev = layer.get("eval") if hasattr(layer, "get") else None
    if not ev or not hasattr(ev, "keys"):
        return layer
    moves = moved_eval_keys()
    old = [k for k in list(ev.keys()) if k in moves]
    if not old:
        return layer
    import copy

    container = OmegaConf.to_container(layer) if OmegaConf.is_config(layer) else copy.deepcopy(dict(layer))
    ev = container["eval"]
    for key in old:
        task, name = moves[key].split(".")
        section = ev.setdefault(task, {})
        if name in section:  # both spellings in one layer: which one was meant is not ours to guess
            raise ConfigError(f"eval.{key} and eval.{moves[key]} are both given ({source}); eval.{key} is the "
                              f"earlier name of eval.{moves[key]}: keep that one")
        section[name] = ev.pop(key)
        if not quiet:
            import sys

            print(f"note: eval.{key} ({source}) is now eval.{moves[key]}; read as that", file=sys.stderr)
    container["eval"] = ev
    return OmegaConf.create(container) if OmegaConf.is_config(layer) else container


def _drop_unknown_task_sections(d: dict[str, Any]) -> dict[str, Any]:
    """A saved config holds a section per task registered when it was written: one of a task not registered now (a
    plugin's, ``VTP_PLUGINS``) is left aside with a note, so the checkpoint still loads for the other tasks."""
    from vtp_bench.registry import TASKS

    ev = d.get("eval")
    if not isinstance(ev, dict):
        return d
    shared = {f.name for f in fields(EvalConfig)}
    unknown = [k for k, v in ev.items() if isinstance(v, dict) and k not in shared and k not in TASKS]
    if not unknown:
        return d
    import sys

    print(f"note: this config holds the options of task(s) {', '.join(unknown)}, not registered here (a plugin's: "
          "set VTP_PLUGINS to use them); left aside", file=sys.stderr)
    return {**d, "eval": {k: v for k, v in ev.items() if k not in unknown}}


def _open_dicts(node: DictConfig) -> None:
    """Plain ``dict`` fields of the schema (trainer, encoder specs) accept new keys; they are checked
    against the constructor they feed (lightning.Trainer, the encoder class) instead."""
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            if OmegaConf.get_type(child) is dict:
                OmegaConf.set_struct(child, False)
            else:
                _open_dicts(child)


def _check_encoders(method: DictConfig) -> None:
    """Every encoder section of the method; a section naming a method (a grounding head's backbone) is that
    method's config, checked when the method that holds it builds it."""
    for key in method:
        value = method[key]
        if isinstance(value, DictConfig) and "name" in value and value.name not in METHODS:
            from vtp_bench.models.build import resolve_encoder  # the encoder registry: imported when checked

            resolve_encoder(OmegaConf.to_container(value), f"method.{key}")


def check_choices(node: DictConfig, prefix: str = "") -> None:
    """Every ``choice`` and ``checked`` field of the structured config (defaults, the method's and the tasks'
    ``Config``), recursively."""
    typ = OmegaConf.get_type(node)
    meta = {f.name: f.metadata for f in fields(typ)} if is_dataclass(typ) else {}
    for key in node:
        value = node._get_node(key)
        if isinstance(value, DictConfig):
            check_choices(value, f"{prefix}{key}.")
        elif "choices" in meta.get(key, {}) and node[key] not in meta[key]["choices"]:
            shown = ", ".join("null" if c is None else str(c) for c in meta[key]["choices"])
            raise ConfigError(f"bad value for config key '{prefix}{key}': {node[key]!r}; choose one of: {shown}")
        elif "rule" in meta.get(key, {}) and not meta[key]["rule"][0](node[key]):
            raise ConfigError(f"bad value for config key '{prefix}{key}': {node[key]!r}; it must be "
                              f"{meta[key]['rule'][1]}")
    if prefix == "":
        check_values(node)
    if prefix == "" and node.optim.scheduler == "step" and not node.optim.milestones:
        raise ConfigError("optim.scheduler=step needs optim.milestones (optimizer steps where the lr drops by "
                          "optim.gamma), e.g. optim.milestones=[1000,2000]")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def positive_number(v: Any) -> bool:
    """A finite number > 0 (a ``checked`` test)."""
    return _is_number(v) and v > 0


def positive_int_or_none(v: Any) -> bool:
    """null or an integer >= 1 (a ``checked`` test)."""
    return v is None or (_is_int(v) and v >= 1)


# key -> (test, what it must be): values a run cannot start with, refused when the config loads (before any run dir)
VALUE_RULES: dict[str, tuple[Any, str]] = {
    "data.batch_size": (lambda v: _is_int(v) and v >= 1, "a positive integer (samples per device and step)"),
    "data.eval_batch_size": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "data.num_frames": (lambda v: _is_int(v) and v >= 1, "a positive integer (frames per video)"),
    "data.eval_num_frames": (lambda v: v is None or (_is_int(v) and v >= 1), "null or a positive integer"),
    "data.img_size": (lambda v: _is_int(v) and v >= 1, "a positive integer (pixels)"),
    "data.num_workers": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "optim.lr": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0 (0 keeps the weights: a load check)"),
    "optim.weight_decay": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    "optim.warmup_steps": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "run.keep_checkpoints": (lambda v: v in ("all", "last") or (_is_int(v) and v >= 0),
                             "all, last or an integer N >= 0 (the newest N epoch/step checkpoints besides last.ckpt)"),
    "seed": (lambda v: _is_int(v) and 0 <= v < 2**32, "an integer in [0, 2^32) (numpy's seed range)"),
    "data.train": (lambda v: isinstance(v, (list, tuple, ListConfig)) and len(v) > 0,
                   "a non-empty list of datasets, e.g. data.train=[synth]"),
    "data.eval": (lambda v: isinstance(v, (list, tuple, ListConfig)) and len(v) > 0,
                  "a non-empty list of datasets, e.g. data.eval=[synth]"),
    "data.crop_scale": (lambda v: isinstance(v, (list, tuple, ListConfig)) and len(v) == 2 and all(
        _is_number(x) for x in v) and 0 < v[0] <= v[1] <= 1, "[min, max] with 0 < min <= max <= 1"),
    "data.max_val_videos": (lambda v: v is None or (_is_int(v) and v >= 1), "null or a positive integer"),
    "optim.betas": (lambda v: isinstance(v, (list, tuple, ListConfig)) and len(v) == 2 and all(
        _is_number(x) and 0 <= x < 1 for x in v), "[beta1, beta2], each in [0, 1)"),
    "optim.eps": (lambda v: _is_number(v) and v > 0, "a finite number > 0"),
    "optim.gamma": (lambda v: _is_number(v) and v > 0, "a finite number > 0 (the lr factor at each milestone)"),
    "run.ckpt_every_n_steps": (lambda v: v is None or (_is_int(v) and v >= 1), "null or a positive integer"),
    "trainer.enable_progress_bar": (lambda v: v is None or isinstance(v, bool), "true or false"),
    "run.version": (lambda v: v is None or (str(v).strip() not in ("", ".", "..") and not any(
        c in str(v) for c in "/\\")), "null or a folder name (no / or ..): runs stay under run.dir/<experiment>/"),
    "eval.val_task": (lambda v: v in _task_names(), lambda: f"a registered task: {', '.join(_task_names())}"),
    "data.format": (lambda v: v in _data_format_names(),
                    lambda: f"a registered data format: {', '.join(_data_format_names())}"),
    "data.eval_format": (lambda v: v in _data_format_names(),
                         lambda: f"a registered data format: {', '.join(_data_format_names())}"),
    "init.source": (lambda v: v is None or str(v).lower() in _layout_names(),
                    lambda: f"null (detected from the keys) or a checkpoint layout: {', '.join(_layout_names())}"),
    "run.loggers": (lambda v: isinstance(v, (list, tuple, ListConfig)) and all(x in LOGGERS for x in v),
                    f"a list of loggers from {', '.join(LOGGERS)}, e.g. run.loggers=[csv,wandb]"),
    "trainer.max_steps": (lambda v: v is None or (_is_int(v) and (v == -1 or v >= 1)),
                          "-1 (no limit) or a positive integer (0 would train nothing)"),
    "trainer.max_epochs": (lambda v: v is None or (_is_int(v) and (v == -1 or v >= 1)),
                           "null, -1 (no limit) or a positive integer"),
    # a part of the validation set scores an easier, smaller benchmark that no one could compare with
    # (Lightning reads an int as a number of batches: 1 is one batch, 1.0 the whole set)
    "trainer.limit_val_batches": (lambda v: v is None or v == 0 or (isinstance(v, float) and v == 1.0),
                                  "1.0 (the whole validation set) or 0 (no validation); metrics on a part of the set "
                                  "are not the set's metrics"),
}


def _task_names() -> list[str]:
    from vtp_bench.registry import TASKS

    return TASKS.names()


def _data_format_names() -> list[str]:
    from vtp_bench.registry import DATA_FORMATS

    return DATA_FORMATS.declared_names()  # read from the source: the config imports no torch


def _layout_names() -> list[str]:
    from vtp_bench.models.checkpoints import layout_names

    return layout_names()


def check_values(cfg: DictConfig) -> None:
    """Refuse values no run can use (``VALUE_RULES``), naming the key, the value and what it must be."""
    for key, (ok, what) in VALUE_RULES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if OmegaConf.select(cfg, key, default="<absent>") == "<absent>":
            continue
        if not ok(value):
            what = what() if callable(what) else what
            raise ConfigError(f"bad value for config key '{key}': {value!r}; it must be {what}")


def _check_trainer(trainer: dict[str, Any]) -> None:
    import lightning

    allowed = set(inspect.signature(lightning.Trainer.__init__).parameters) - {"self", "logger", "callbacks"}
    unknown = sorted(set(trainer) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown config key 'trainer.{unknown[0]}': not an argument of lightning.Trainer "
            f"(known: {', '.join(sorted(allowed))})"
        )


# free-form names: YAML reads on/off/yes/no/true/false as booleans, which would become a folder "False"
NAME_KEYS = ("run.version", "run.dir")


def _parse_overrides(overrides: list[str] | tuple[str, ...]) -> DictConfig:
    try:
        cli = OmegaConf.from_dotlist(list(overrides))
    except Exception as e:  # from_dotlist raises plain ValueErrors for malformed items
        raise ConfigError(f"bad override in {list(overrides)}: {e} (write key=value, e.g. data.batch_size=8)") from None
    for key in NAME_KEYS:
        value = OmegaConf.select(cli, key, default=None)
        if isinstance(value, bool):
            raise ConfigError(f"bad value for config key '{key}': the command line's word reads as the boolean "
                              f"{value}; quote it to mean the name, e.g. {key}=\"'off'\"")
    return cli


def apply_overrides(cfg: DictConfig, overrides: list[str] | tuple[str, ...]) -> DictConfig:
    """``cfg`` with command-line ``key=value`` overrides merged in; unknown keys and wrong types are named."""
    if not overrides:
        return cfg
    try:
        merged = OmegaConf.merge(cfg, _move_eval_keys(_parse_overrides(overrides), "command line"))
    except OmegaConfBaseException as e:
        raise _wrap(e, "command line") from None
    check_choices(merged)
    return merged


def load_config(experiment: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose defaults <- experiment file <- overrides, validate, and return a resolved, read-only config."""
    path = _experiment_file(experiment)
    try:
        exp = OmegaConf.load(path)
    except Exception as e:  # yaml syntax: the parser's first line names the line and column
        where = "; ".join(line.strip() for line in str(e).splitlines() if line.strip() and "^" not in line)
        raise ConfigError(f"{path} is not valid YAML: {where}") from None
    if not isinstance(exp, DictConfig):
        raise ConfigError(f"{path}: an experiment file is a mapping of config sections (method:, data:, ...), "
                          f"not a {type(exp).__name__}")
    exp = _move_eval_keys(exp, str(path))
    cli = _move_eval_keys(_parse_overrides(overrides), "command line")
    method_name = OmegaConf.select(cli, "method.name") or OmegaConf.select(exp, "method.name")
    if not method_name:
        raise ConfigError(f"{path}: missing 'method.name' (one of: {', '.join(METHODS.names())})")
    base = OmegaConf.structured(ExperimentConfig)
    OmegaConf.set_struct(base, False)
    base.method = method_schema(str(method_name))
    base.eval = eval_schema()
    base.name = path.stem
    OmegaConf.set_struct(base, True)
    _open_dicts(base)
    _clear_replaced_encoders(base, exp)
    # trainer is an open dict in the schema; its keys are checked against lightning.Trainer below
    cfg = base
    for layer, source in ((exp, str(path)), (cli, "command line")):
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except OmegaConfBaseException as e:
            raise _wrap(e, source) from None
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        raise _wrap(e, "interpolation") from None
    _check_trainer(OmegaConf.to_container(cfg.trainer))
    _check_encoders(cfg.method)
    try:
        check_choices(cfg)
    except ConfigError as e:
        raise ConfigError(f"{e} (experiment {path}, or the command line)") from None
    OmegaConf.set_readonly(cfg, True)
    return cfg


def config_from_dict(d: dict[str, Any]) -> DictConfig:
    """Rebuild a validated config from a resolved dict (as saved in a checkpoint or run dir)."""
    base = OmegaConf.structured(ExperimentConfig)
    OmegaConf.set_struct(base, False)
    base.method = method_schema(d["method"]["name"])
    base.eval = eval_schema()
    OmegaConf.set_struct(base, True)
    d = _drop_unknown_task_sections(_move_eval_keys(d, "saved config", quiet=True))
    _open_dicts(base)
    _clear_replaced_encoders(base, d)
    try:
        cfg = OmegaConf.merge(base, d)
    except OmegaConfBaseException as e:
        raise _wrap(e, "checkpoint config") from None
    check_choices(cfg)
    return cfg


def to_dict(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
