"""The per-item input interface: ``Input`` (a provider, one per file of this package or of a plugin, registered in
``registry.INPUTS``), ``ItemContext`` (the item it loads from) and ``ItemInputs`` (the providers a method declares,
configured for one dataset, loaded together).

How an item is loaded: the dataset builds an ``ItemContext`` for the row (``dataset.load_item``) and
``ItemInputs.load`` calls ``load`` of every provider the method declared, the clip's (``video``) first, except
those another one stands in for (``replaces``; ``grounding_clips`` stands in for the clip in training items) and
those that need one of them. The clip is decoded once, when a provider first reads ``item.clip``, so an item of
inputs that read no pixels decodes none.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping, Sequence, TypeVar

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor

from vtp_bench.data.inputs import VIDEO, InputError
from vtp_bench.data.manifest import ManifestRow
from vtp_bench.data.regions import RegionReadError
from vtp_bench.registry import INPUTS

if TYPE_CHECKING:
    from vtp_bench.data.dataset import DecodedClip

__all__ = ["Input", "InputError", "InputReadError", "ItemContext", "ItemInputs", "NoOptions", "check_inputs",
           "dataset_entry", "fake_inputs", "method_inputs", "pad_frames", "row_path", "variable_length_keys"]


class InputReadError(RegionReadError):
    """One item's input cannot be read (a missing or damaged side file): the item is skipped and counted, as an
    unreadable video is (a ``RegionReadError``, which the datasets catch)."""


@dataclass
class NoOptions:
    """The options of an input that has none (``data.inputs.<name>`` must then be absent or empty)."""


@dataclass
class ItemContext:
    """One item as a provider sees it. ``rng`` is the item's own (its seed, epoch and index): draw only from it, so
    items stay reproducible whatever the worker. ``clip`` is the row's clip in the item's window (``start``/``end``:
    the row's, or an evaluation clip's), decoded once on first use, with its frame ``indices``, ``crop`` and
    ``times``; ``decode`` decodes another window of the same video (``transform``: how its frames are cropped)."""

    row: ManifestRow
    manifest: Path
    path: Any  # the video file (a Path), or a shard sample's bytes (data/shards.py)
    num_frames: int
    sampling: str
    rng: random.Random
    start: float | None
    end: float | None
    decoder: Callable[[float | None, float | None, Any], "DecodedClip"]  # (start, end, transform) -> clip
    transform: Any = None
    _clip: "DecodedClip | None" = field(default=None, init=False, repr=False)

    @property
    def clip(self) -> "DecodedClip":
        if self._clip is None:
            self._clip = self.decode(self.start, self.end)
        return self._clip

    def decode(self, start: float | None, end: float | None, transform: Any = None) -> "DecodedClip":
        return self.decoder(start, end, self.transform if transform is None else transform)


class Input:
    """A per-item input. Subclass it in one file and register it: ``@INPUTS.register("<name>")`` (a literal name,
    so ``vtp-bench list`` reads it without importing torch) with the same ``name``. What it declares:

    - ``keys``: the item (and batch) keys ``load`` writes; two inputs of one item may not write the same key;
    - ``variable_length``: those of ``keys`` whose first dimension varies by item: ``collate`` right-pads them
      with zeros to the longest item of the batch (the rest are stacked: a fixed shape);
    - ``needs``: inputs the method must declare with this one; ``"video"``: it reads ``item.clip`` (the decoded
      pixels, the sampled frame indices, the crop, the frame times);
    - ``excludes``: inputs it cannot be read with; ``replaces``: inputs it stands in for in the items that load it
      (they are not loaded, nor the inputs that need them);
    - ``per_clip``: False for a training-only input: evaluation clips (``per_clip()``) leave it out;
    - ``side_files``: True when it reads files beside the video (region features, box files): a data format that
      holds only the videos (tar shards) cannot give it;
    - ``Options``: a dataclass of its options, read by ``read_options`` from ``data.inputs.<name>`` (unknown keys
      and wrong types are refused, naming the key); ``configure`` builds the input for one dataset (override it
      to pick a per-dataset path, as ``region_feats`` does with ``dataset_entry``);
    - ``check_rows``: refuse a manifest the input cannot read, when the dataset is built;
    - ``load``: the tensors of one item (``ItemContext``); raise ``InputReadError`` for a missing or damaged side
      file (the item is skipped and counted), ``InputError`` for a configuration that cannot work;
    - ``fake``: random tensors of a batch of ``n`` shaped as ``collate`` returns them (``testing.fake_batch``: the
      checks parametrised over the methods run on them).
    """

    name: ClassVar[str] = ""
    keys: ClassVar[tuple[str, ...]] = ()
    variable_length: ClassVar[tuple[str, ...]] = ()
    needs: ClassVar[frozenset[str]] = frozenset()
    excludes: ClassVar[frozenset[str]] = frozenset()
    replaces: ClassVar[frozenset[str]] = frozenset()
    per_clip: ClassVar[bool] = True
    side_files: ClassVar[bool] = False
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Any = None) -> None:
        self.options = self.Options() if options is None else options

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"

    # --- options -------------------------------------------------------------------------------------------------
    @classmethod
    def options_from(cls, given: Any, where: str) -> Any:
        """``given`` (a mapping, or None: the defaults) as an ``Options``, checked; errors name ``where``."""
        try:
            return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls.Options), given or {}))
        except (OmegaConfBaseException, ValueError, TypeError) as e:
            raise InputError(f"{where}: {str(e).splitlines()[0]}") from None

    @classmethod
    def read_options(cls, cfg: DictConfig) -> Any:
        """This input's options in a run's config: ``data.inputs.<name>``."""
        return cls.options_from(config_value(cfg, f"data.inputs.{cls.name}"), f"data.inputs.{cls.name}")

    @classmethod
    def options_elsewhere(cls, cfg: DictConfig, keys: str) -> None:
        """For an input whose options are other config keys (``keys``, for the message): refuse a
        ``data.inputs.<name>`` section, which it would not read."""
        if config_value(cfg, f"data.inputs.{cls.name}") is not None:
            raise InputError(f"data.inputs.{cls.name}: input {cls.name!r} reads its options from {keys}")

    @classmethod
    def configure(cls, cfg: DictConfig, dataset: str, name: str | None = None) -> "Input":
        """The input for one dataset (``dataset`` as given: a registered name or a path; ``name``: what a path
        dataset is called). Default: the same for every dataset, with ``read_options``."""
        return cls(cls.read_options(cfg))

    # --- data ----------------------------------------------------------------------------------------------------
    def check_rows(self, rows: Sequence[ManifestRow], manifest: Path) -> None:
        """Raise ``ManifestError`` when the manifest's rows lack what this input reads."""

    def load(self, item: ItemContext) -> dict[str, Tensor]:
        raise NotImplementedError(f"input {self.name!r} does not define load(item)")

    @classmethod
    def fake(cls, cfg: DictConfig, n: int, generator: torch.Generator, dtype: torch.dtype) -> dict[str, Tensor]:
        raise NotImplementedError(f"input {cls.name!r} does not define fake(cfg, n, generator, dtype), which the "
                                  "tests' fake batches need")


# --- helpers for providers ----------------------------------------------------------------------------------------
def config_value(cfg: Any, key: str) -> Any:
    """``key`` of a config as plain Python (None when absent)."""
    node = OmegaConf.select(cfg, key, default=None) if OmegaConf.is_config(cfg) else None
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def dataset_entry(entries: Mapping[str, Any] | None, dataset: str, name: str | None = None) -> Any:
    """A per-dataset option (``data.regions``, or a provider's ``paths``): the entry of ``name`` (what a path
    dataset is called) or of ``dataset`` (as given); None when neither has one."""
    entries = entries or {}
    key = next((k for k in (name, dataset) if k is not None and k in entries), None)
    return None if key is None else entries[key]


def row_path(template: str, row: ManifestRow, what: str) -> Path:
    """A row's side file from a path template with the fields ``{video_id}``, ``{stem}`` (the manifest's video
    path without its extension) and ``{split}``; ``what`` names the template's key in messages."""
    try:
        return Path(template.format(video_id=row.video_id, stem=str(Path(row.path).with_suffix("")), split=row.split))
    except (KeyError, IndexError) as e:
        raise InputError(f"{what} template {template!r}: unknown field {e}; use {{video_id}}, {{stem}} or "
                         "{split}") from None


def pad_frames(x: np.ndarray, num_frames: int) -> np.ndarray:
    """Zero frames (mask False) after the last real one, as the clip is padded."""
    if len(x) >= num_frames:
        return x
    return np.concatenate([x, np.zeros((num_frames - len(x), *x.shape[1:]), x.dtype)])


# --- what a method reads --------------------------------------------------------------------------------------------
def input_class(name: str) -> type[Input]:
    cls = INPUTS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Input)):
        raise InputError(f"input {name!r} ({getattr(cls, '__module__', '?')}) is not a subclass of "
                         "vtp_bench.data.inputs.base.Input")
    if cls.name != name:
        raise InputError(f"input {name!r} is registered by {cls.__qualname__}, whose name is {cls.name!r}: set "
                         f"name = {name!r}")
    stray = sorted(set(cls.variable_length) - set(cls.keys))
    if stray:
        raise InputError(f"input {name!r}: variable_length {stray} are not among its keys {list(cls.keys)}")
    return cls


def check_inputs(names: Iterable[str], who: str) -> frozenset[str]:
    """``names`` are registered inputs whose ``needs`` are among them and none ``excludes`` another."""
    names = frozenset(names)
    if not names:
        raise InputError(f"{who} declares no inputs")
    known = INPUTS.names()
    unknown = sorted(names - set(known))
    if unknown:
        raise InputError(f"{who} asks for inputs {unknown}; the registered inputs are {known} (one file each in "
                         "vtp_bench/data/inputs/, or a VTP_PLUGINS file)")
    for n in sorted(names):
        cls = input_class(n)
        missing = sorted(cls.needs - names)
        if missing:
            why = " (it reads the decoded clip)" if VIDEO in missing else ""
            raise InputError(f"{who}: input {n!r} needs {missing} too{why}")
        clash = sorted(cls.excludes & names)
        if clash:
            raise InputError(f"{who}: input {n!r} cannot be read with {clash}")
    return names


def method_inputs(cfg: DictConfig) -> frozenset[str]:
    """What the configured method reads, from its class (``Method.data_inputs``), checked."""
    from vtp_bench.registry import METHODS

    return check_inputs(METHODS.get(cfg.method.name).data_inputs(cfg.method), f"method {cfg.method.name!r}")


T = TypeVar("T")


def _standing(inputs: Sequence[T]) -> list[T]:
    """``inputs`` (providers or their classes) less those another one stands in for (``replaces``) and those that
    need one of these (not the one standing in): what one item loads."""
    names = {i.name for i in inputs}  # type: ignore[attr-defined]
    gone = set().union(*(i.replaces for i in inputs)) & names  # type: ignore[attr-defined]
    while True:
        more = {i.name for i in inputs  # type: ignore[attr-defined]
                if i.name not in gone and (i.needs - i.replaces) & gone}  # type: ignore[attr-defined]
        if not more:
            return [i for i in inputs if i.name not in gone]  # type: ignore[attr-defined]
        gone |= more


def variable_length_keys() -> frozenset[str]:
    """Item keys whose first dimension varies by item: ``Input.variable_length`` of every registered input."""
    return frozenset(k for n in INPUTS.names() for k in getattr(INPUTS.get(n), "variable_length", ()))


def fake_inputs(cfg: DictConfig, n: int, generator: torch.Generator, dtype: torch.dtype) -> dict[str, Tensor]:
    """Random tensors of a training batch of ``n`` for the inputs the configured method declares, each from its
    provider's ``fake``; not the clip (``video``: the caller's)."""
    out: dict[str, Tensor] = {}
    for cls in _standing([input_class(x) for x in sorted(method_inputs(cfg))]):
        if cls.name != VIDEO:
            out.update(cls.fake(cfg, n, generator, dtype))
    return out


class ItemInputs:
    """The inputs a dataset loads per item: one configured provider per declared name (``names``), built from a
    run's config for one dataset (``for_dataset``) or by hand (``of``). Default: the clip only."""

    def __init__(self, providers: Iterable[Input] = ()) -> None:
        given = list(providers) or [input_class(VIDEO)()]
        names = [p.name for p in given]
        if len(set(names)) != len(names):
            raise InputError(f"an input is given twice: {sorted(names)}")
        self.names = check_inputs(names, "these inputs")
        self.providers = tuple(sorted(given, key=lambda p: (p.name != VIDEO, p.name)))  # the clip first
        self.loaded = tuple(_standing(self.providers))
        written: dict[str, str] = {}
        for p in self.loaded:
            for k in p.keys:
                if k in written:
                    raise InputError(f"inputs {written[k]!r} and {p.name!r} both write {k!r}")
                written[k] = p.name

    def __repr__(self) -> str:
        return f"ItemInputs({list(self.providers)!r})"

    @classmethod
    def of(cls, inputs: Iterable[str] | Mapping[str, Any]) -> "ItemInputs":
        """By name, with options given here instead of a run's config (tests, scripts): ``of(["video",
        "frame_times"])``, ``of({"video": None, "grounding_clips": {"clip_seconds": 2.0}})``."""
        spec = dict(inputs) if isinstance(inputs, Mapping) else dict.fromkeys(inputs)
        check_inputs(spec, "ItemInputs.of")
        return cls(input_class(n)(input_class(n).options_from(o, f"options of input {n!r}")) for n, o in spec.items())

    @classmethod
    def for_dataset(cls, cfg: DictConfig, dataset: str, name: str | None = None) -> "ItemInputs":
        """What the configured method reads, configured for ``dataset`` (as given: a registered name or a path;
        ``name``: what a path dataset is called, its folder or stem or ``--name``, which per-dataset options use)."""
        names = method_inputs(cfg)
        unknown = sorted(set(config_value(cfg, "data.inputs") or {}) - set(INPUTS.names()))
        if unknown:
            raise InputError(f"data.inputs.{unknown[0]}: no input {unknown[0]!r} is registered; the inputs are "
                             f"{INPUTS.names()}")
        return cls(input_class(n).configure(cfg, dataset, name) for n in sorted(names))

    @property
    def video(self) -> bool:
        """The clip is among the inputs (the evaluation set's videos must exist)."""
        return VIDEO in self.names

    @property
    def variable_length(self) -> frozenset[str]:
        return frozenset(k for p in self.loaded for k in p.variable_length)

    def per_clip(self) -> "ItemInputs":
        """What one evaluation clip loads: training-only inputs (``per_clip = False``) are left out, and those that
        need one of them."""
        gone = {p.name for p in self.providers if not p.per_clip}
        while more := {p.name for p in self.providers if p.name not in gone and p.needs & gone}:
            gone |= more
        return ItemInputs([p for p in self.providers if p.name not in gone]) if gone else self

    def check_rows(self, rows: Sequence[ManifestRow], manifest: Path) -> None:
        for p in self.loaded:
            p.check_rows(rows, manifest)

    def load(self, item: ItemContext) -> dict[str, Tensor]:
        """The tensors of one item; raises ``VideoReadError`` / ``RegionReadError`` (``InputReadError``) for what
        cannot be read, which the datasets turn into a skipped item."""
        out: dict[str, Tensor] = {}
        for p in self.loaded:
            got = p.load(item)
            stray = sorted(set(got) - set(p.keys))
            if stray:
                raise InputError(f"input {p.name!r} wrote {stray}, which are not among its keys {list(p.keys)}")
            out.update(got)
        return out
