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
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vtp_bench.choices import GATHER_MODES, LOGGERS, MIX_MODES, OPTIMIZER_NAMES, SAMPLINGS, SCHEDULERS, TEMPORAL_FIXES
from vtp_bench.errors import ConfigError
from vtp_bench.registry import METHODS, RegistryError, experiments_dir, list_experiments

__all__ = ["ConfigError", "choice", "load_config", "config_from_dict", "apply_overrides", "to_dict"]

REPO_ROOT = Path(__file__).resolve().parents[2]


def choice(default: Any, options: Sequence[Any]) -> Any:
    """A config field that takes one of ``options`` (also in a method's ``Config``): any other value is refused
    when the config is loaded, naming the key and the choices, not when the value is first used."""
    return field(default=default, metadata={"choices": tuple(options)})


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
    # training data: files (a manifest's video files) | webdataset (tar shards of `vtp-bench data shard` or
    # video2dataset under <root>/<name>/shards/train/; docs/data_shards.md)
    format: str = choice("files", ("files", "webdataset"))
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
    split: str = "test"
    allow_missing: bool = False  # score a test set with missing videos (they are counted and reported)
    # retrieval: video-to-text ranks a video's captions caption-wise (Frozen family) or group-wise (CLIP4Clip, X-Pool)
    v2t: str = choice("caption", ("caption", "group"))
    # retrieval: another codebase's counting, named in the results JSON (tasks/retrieval.py PROTOCOLS): "xpool" =
    # X-Pool / Prompt Switch (group-wise v2t; LSMDC without the clip their loader skips)
    protocol: str = choice("vtp_bench", ("vtp_bench", "xpool"))
    exclude: list[str] = field(default_factory=list)  # video ids left out of the evaluation (recorded)
    # retrieval: re-ranked metrics besides the raw ones (metrics_reranked; metrics/rerank.py): dual softmax (its
    # temperature on the cosine) or QB-Norm (a querybank of up to qbnorm_bank training captions, qbnorm_beta/_k;
    # bank from qbnorm_bank_manifest, default the train.jsonl beside the evaluated manifest)
    rerank: str = choice("none", ("none", "dual_softmax", "qbnorm"))
    rerank_temperature: float = 0.01
    qbnorm_beta: float = 20.0
    qbnorm_k: int = 1
    qbnorm_bank: int = 5000
    qbnorm_bank_manifest: Optional[str] = None
    # zeroshot_cls: class names become texts through this template ("{}" = the name); null: the dataset's own
    # (the synthetic classes.json has "an object {}"), else metrics.classification.PROMPT_TEMPLATE
    prompt_template: Optional[str] = None
    # grounding: clips of this many seconds at the same stride; moments of up to grounding_max_clips clips (null: all)
    grounding_clip_seconds: float = 1.0
    grounding_max_clips: Optional[int] = None
    # grounding (zero-shot): a moment's score: the method's similarity to each clip, inside minus outside mean
    # (contrast) or inside mean (mean); or the cosine of the query and the moment's mean clip embedding (pooled)
    grounding_score: str = choice("contrast", ("contrast", "mean", "pooled"))
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
    eval: EvalConfig = field(default_factory=EvalConfig)
    init: InitConfig = field(default_factory=InitConfig)


def _experiment_file(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    candidate = experiments_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
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
    """Every ``choice`` field of the structured config (defaults and the method's ``Config``), recursively."""
    typ = OmegaConf.get_type(node)
    specs = {f.name: f.metadata["choices"] for f in fields(typ) if "choices" in f.metadata} if is_dataclass(typ) else {}
    for key in node:
        value = node._get_node(key)
        if isinstance(value, DictConfig):
            check_choices(value, f"{prefix}{key}.")
        elif key in specs and node[key] not in specs[key]:
            shown = ", ".join("null" if c is None else str(c) for c in specs[key])
            raise ConfigError(f"bad value for config key '{prefix}{key}': {node[key]!r}; choose one of: {shown}")
    if prefix == "":
        check_values(node)
    if prefix == "" and node.optim.scheduler == "step" and not node.optim.milestones:
        raise ConfigError("optim.scheduler=step needs optim.milestones (optimizer steps where the lr drops by "
                          "optim.gamma), e.g. optim.milestones=[1000,2000]")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


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
    "eval.rerank_temperature": (lambda v: _is_number(v) and v > 0, "a finite number > 0"),
    "eval.grounding_clip_seconds": (lambda v: _is_number(v) and v > 0, "a finite number of seconds > 0"),
    "eval.grounding_max_clips": (lambda v: v is None or (_is_int(v) and v >= 1), "null (all) or a positive integer"),
    "eval.prompt_template": (lambda v: v is None or (isinstance(v, str) and v.count("{}") == 1),
                             "null or a text with exactly one {} (the class name), e.g. 'a video of {}'"),
    "trainer.enable_progress_bar": (lambda v: v is None or isinstance(v, bool), "true or false"),
    "run.version": (lambda v: v is None or (str(v).strip() not in ("", ".", "..") and not any(
        c in str(v) for c in "/\\")), "null or a folder name (no / or ..): runs stay under run.dir/<experiment>/"),
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
        merged = OmegaConf.merge(cfg, _parse_overrides(overrides))
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
    cli = _parse_overrides(overrides)
    method_name = OmegaConf.select(cli, "method.name") or OmegaConf.select(exp, "method.name")
    if not method_name:
        raise ConfigError(f"{path}: missing 'method.name' (one of: {', '.join(METHODS.names())})")
    base = OmegaConf.structured(ExperimentConfig)
    OmegaConf.set_struct(base, False)
    base.method = method_schema(str(method_name))
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
    OmegaConf.set_struct(base, True)
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
