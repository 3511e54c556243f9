"""Load released checkpoints into vtp_bench's encoders and methods: ``load_official(module, path_or_sd, source)``.

The loader is generic: read the file safely, recognise its layout, map its keys, fit shapes, validate strictly and
report. What a released format *is* lives with the model it belongs to, in two declarations:

- a **layout** (:class:`CheckpointLayout`, registered in ``CHECKPOINT_LAYOUTS`` by the file of the model whose
  format it is): how its keys are recognised and how they are renamed into its ``keys`` scheme (e.g. HuggingFace
  CLIP -> open_clip names). ``vtp-bench list`` lists them.
- a **target** (:class:`CheckpointTarget`, the base of every tower and method): ``checkpoint_prefixes(layout)`` says
  where the scheme's keys go in that module (:class:`LayoutMap`), and ``after_official_load`` what to derive from
  them. A module that declares nothing is searched for towers that do (a method with a space_time_vit and an
  hf_text tower loads a Frozen-in-Time file into them).

Generic shape fix: a ``temporal_embed`` [1, F, D] whose F differs from the model's is fitted as Frozen's
``_inflate_positional_embeds`` does (truncate; pad with zeros, or interpolate: ``temporal_fix``).
"""

from __future__ import annotations

import pickle
import re
import types
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vtp_bench.models.layouts import TEMPORAL_FIXES, CheckpointLayout, CheckpointTarget, LayoutMap


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read safely, or does not fit the model it is loaded into."""


# ------------------------------------------------------------------------------------------------ reading
def _file_kind(path: Path) -> str | None:
    """What the first bytes say: ``torch`` (a zip archive, torch.save's format and TorchScript's, or a legacy
    pickle), ``safetensors`` (an 8-byte header length, then its JSON header), or None: not a checkpoint at all (a
    text file, an HTML error page), which no ``--trust-checkpoint`` would make readable."""
    with open(path, "rb") as f:
        head = f.read(9)
    if path.suffix == ".safetensors" or (len(head) == 9 and head[8:9] == b"{"):
        return "safetensors"
    if head.startswith(b"PK") or head.startswith(b"\x80"):
        return "torch"
    return None


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 1)[-1] == "constants.pkl" or "/code/" in n for n in z.namelist())


class _Stub:
    """Stands in for a class that a trusted checkpoint pickled but that is not importable here (Frozen's
    ``parse_config.ConfigParser`` in its ``config`` entry): the weights still load."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_Stub,), {"__module__": module})


_lenient_pickle = types.SimpleNamespace(Unpickler=_LenientUnpickler, load=pickle.load, __name__="lenient_pickle")


def load_checkpoint(path: str | Path, trust: bool = False) -> Any:
    """Read a checkpoint file safely: ``torch.load(weights_only=True)``; arbitrary unpickling only when the user
    trusts the file (then classes that cannot be imported here become inert stubs). TorchScript archives
    (OpenAI CLIP) are read with ``torch.jit.load`` and give their state dict; ``.safetensors`` files too."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    kind = _file_kind(path)
    if kind is None:
        head = path.read_bytes()[:24]
        raise CheckpointError(
            f"{path} is not a checkpoint: neither a PyTorch file (zip archive or pickle) nor safetensors (it starts "
            f"with {head!r}); pass the .ckpt / .pth / .pt / .safetensors file of a model"
        )
    if kind == "safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():  # torch.jit.load is deprecated, but OpenAI's files are TorchScript
                warnings.simplefilter("ignore", FutureWarning)
                return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        except Exception as e:
            raise CheckpointError(f"cannot read TorchScript checkpoint {path}: {e}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if not trust:
            raise _refusal(path, e) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_lenient_pickle)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None


def _refusal(path: Path, e: Exception) -> CheckpointError:
    """Why ``weights_only=True`` failed, in one readable line: a pickled object it may not build (then
    ``--trust-checkpoint`` is the way), or a file that is not a readable checkpoint at all."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    reason = next((line.strip() for line in text.splitlines()
                   if "Unsupported global" in line or "Unsupported operand" in line), None)
    if reason is not None or isinstance(e, pickle.UnpicklingError):
        reason = (reason or text.splitlines()[0]).split(" was not an allowed global")[0][:200]
        return CheckpointError(f"checkpoint {path} needs arbitrary unpickling, which weights_only=True refuses "
                               f"({reason}); if you trust the file, pass --trust-checkpoint")
    return CheckpointError(f"cannot read checkpoint {path} ({type(e).__name__}: {text.splitlines()[0][:200]}); "
                           f"is it a complete PyTorch checkpoint?")


def state_dict_of(obj: Any) -> dict[str, Tensor]:
    """The tensors of a checkpoint: ``{'state_dict': ...}`` / ``{'model': ...}`` unwrapped, the DataParallel
    ``module.`` prefix stripped."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError("the checkpoint holds no state dict")
    sd = {}
    for k, v in obj.items():
        k = k[len("module."):] if k.startswith("module.") else k
        sd[k] = v
    return sd


# ----------------------------------------------------------------------------------- layouts and targets
def layouts() -> list[CheckpointLayout]:
    """Every registered layout, in detection order."""
    from vtp_bench.registry import CHECKPOINT_LAYOUTS

    found = [CHECKPOINT_LAYOUTS.get(n)(n) for n in CHECKPOINT_LAYOUTS.names()]
    return sorted(found, key=lambda lay: (-lay.priority, lay.name))


def layout_names() -> list[str]:
    """The names (and aliases) ``source`` accepts."""
    return sorted({n for lay in layouts() for n in (lay.name, *lay.aliases)})


def get_layout(name: str) -> CheckpointLayout:
    for lay in layouts():
        if name.lower() in (lay.name, *lay.aliases):
            return lay
    raise CheckpointError(f"unknown checkpoint source {name!r}; known: {', '.join(layout_names())}")


def detect_layout(sd: Mapping[str, Any]) -> CheckpointLayout:
    for lay in layouts():
        if lay.recognises(sd):
            return lay
    raise CheckpointError(
        "cannot tell the checkpoint's source from its keys (first: "
        f"{', '.join(list(sd)[:5])}); name its layout with --ckpt-source (init.source): one of "
        f"{', '.join(layout_names())}"
    )


def detect_source(sd: Mapping[str, Any]) -> str:
    """The name of the layout ``sd``'s keys show."""
    return detect_layout(sd).name


def layout_map(layout: CheckpointLayout, module: nn.Module) -> LayoutMap:
    """``module``'s own map of ``layout``, else the union of the maps of the targets inside it (the first target
    to claim a checkpoint prefix takes it; a target's children are not searched)."""
    if isinstance(module, CheckpointTarget):
        own = module.checkpoint_prefixes(layout)
        if own is not None:
            return own
    merged = LayoutMap({})
    claimed: list[str] = []
    for path, m in module.named_modules():
        if not path or any(path.startswith(c + ".") for c in claimed) or not isinstance(m, CheckpointTarget):
            continue
        sub = m.checkpoint_prefixes(layout)
        if sub is None:
            continue
        claimed.append(path)
        for src, dst in sub.prefixes.items():
            merged.prefixes.setdefault(src, f"{path}.{dst}")
        merged.optional += sub.optional
        merged.unused += sub.unused
        merged.derived += tuple(f"{path}.{d}" for d in sub.derived)
    if not merged.prefixes:
        raise CheckpointError(f"{type(module).__name__} has no part that takes a {layout.name!r} checkpoint "
                              f"(its keys are {layout.keys} names); is it the right file for this model?")
    return merged


# ----------------------------------------------------------------------------------------- shape fixes
def inflate_temporal_embed(embed: Tensor, num_frames: int, fix: str = "zeros") -> Tensor:
    """[1, F, D] -> [1, num_frames, D] as Frozen's ``_inflate_positional_embeds``: truncate when the checkpoint
    has more frames; with fewer, pad with zeros or interpolate (``interp`` = nearest, ``bilinear``)."""
    if fix not in TEMPORAL_FIXES:
        raise ValueError(f"temporal_fix must be one of {TEMPORAL_FIXES}, got {fix!r}")
    have = embed.shape[1]
    if have >= num_frames:
        return embed[:, :num_frames].clone()
    if fix == "zeros":
        out = embed.new_zeros(embed.shape[0], num_frames, embed.shape[2])
        out[:, :have] = embed
        return out
    mode = "nearest" if fix == "interp" else "bilinear"
    return F.interpolate(embed.unsqueeze(0), size=(num_frames, embed.shape[2]), mode=mode).squeeze(0)


def _fit_temporal(mapped: dict[str, Tensor], own: Mapping[str, Tensor], fix: str, notes: list[str]) -> None:
    for k, v in mapped.items():
        mine = own.get(k)
        if (k.split(".")[-1] == "temporal_embed" and mine is not None and v.ndim == mine.ndim == 3
                and v.shape[1] != mine.shape[1] and (v.shape[0], v.shape[2]) == (mine.shape[0], mine.shape[2])):
            notes.append(f"{k}: checkpoint has {v.shape[1]} frames, model {mine.shape[1]}; fitted with {fix}")
            mapped[k] = inflate_temporal_embed(v, mine.shape[1], fix)


# ---------------------------------------------------------------------------------------------- loading
@dataclass
class LoadReport:
    source: str
    loaded: list[str] = field(default_factory=list)  # our keys that were set
    ignored: list[str] = field(default_factory=list)  # checkpoint keys of parts the module does not have
    untouched: list[str] = field(default_factory=list)  # our keys outside the parts the file covers
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return describe_load(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "loaded": len(self.loaded), "ignored": self.ignored,
                "untouched": self.untouched, "notes": self.notes}


def describe_load(report: Mapping[str, Any]) -> str:
    """What a user must see after loading (``LoadReport.to_dict()``, as kept in results JSON and run summaries):
    counts, notes, and the keys that were not used or not set."""
    lines = [f"loaded {report['loaded']} tensors from a {report['source']} checkpoint"]
    lines += [f"  note: {n}" for n in report["notes"]]
    for what, keys in (("checkpoint keys not used", report["ignored"]),
                       ("model keys not in the file (kept as initialised)", report["untouched"])):
        if keys:
            more = f" ... (+{len(keys) - 8})" if len(keys) > 8 else ""
            lines.append(f"  {what}: {len(keys)}: {', '.join(keys[:8])}{more}")
    return "\n".join(lines)


def _remap(sd: Mapping[str, Tensor], prefixes: Mapping[str, str]) -> tuple[dict[str, Tensor], list[str]]:
    out, ignored = {}, []
    order = sorted(prefixes, key=len, reverse=True)
    for key, value in sd.items():
        for p in order:
            if key.startswith(p):
                out[prefixes[p] + key[len(p):]] = value
                break
        else:
            ignored.append(key)
    return out, ignored


def _choose_layout(sd: Mapping[str, Any], source: str | None) -> CheckpointLayout:
    if source is None:
        return detect_layout(sd)
    given = get_layout(source)
    try:
        detected = detect_layout(sd)
    except CheckpointError:
        return given
    if detected.name != given.name and not (given.family and given.family == detected.family):
        raise CheckpointError(f"checkpoint source {source!r} was given, but the keys are those of a "
                              f"{detected.name!r} checkpoint (e.g. {next(iter(sd))})")
    return given


def load_official(
    module: nn.Module,
    path_or_state_dict: str | Path | Mapping[str, Any],
    source: str | None = None,
    *,
    temporal_fix: str = "zeros",
    strict: bool = True,
    trust: bool = False,
) -> LoadReport:
    """Load a released checkpoint into ``module`` (an encoder, or a method holding encoders); see the module
    docstring. ``source``: a layout name (None: detected from the keys). ``strict``: checkpoint keys that have no
    place in the module are an error (else reported); a tower alone loads its part of a file by design."""
    obj = path_or_state_dict
    if isinstance(obj, (str, Path)):
        obj = load_checkpoint(obj, trust)
    raw = state_dict_of(obj)
    layout = _choose_layout(raw, source)
    sd = layout.normalise(raw)
    plan = layout_map(layout, module)
    report = LoadReport(layout.name)
    own = module.state_dict()

    mapped, ignored = _remap(sd, plan.prefixes)
    by_design = [k for k in ignored if k.startswith(plan.unused)] if plan.unused else []
    ignored = [k for k in ignored if k not in set(by_design)]
    if ignored and strict and not (isinstance(module, CheckpointTarget) and module.takes_part_of_file):
        parts = sorted({k.split(".")[0] for k in ignored})
        raise CheckpointError(f"{layout.name} checkpoint has parts {type(module).__name__} has no tower for "
                              f"({', '.join(parts)}: {len(ignored)} keys, e.g. {ignored[0]}); load it with "
                              f"strict=False (--ckpt-non-strict / init.strict=false) to use the rest")
    unexpected = [k for k in mapped if k not in own]
    mapped = {k: v for k, v in mapped.items() if k in own}
    absent = [plan.prefixes[p] for p in plan.optional if p in plan.prefixes and not any(k.startswith(p) for k in sd)]
    covered = [k for k in own if any(k.startswith(d) for d in plan.prefixes.values())
               and not any(k.startswith(a) for a in absent)]
    missing = [k for k in covered if k not in mapped]
    if missing:
        raise CheckpointError(f"{layout.name} checkpoint lacks {len(missing)} of the model's keys, e.g. "
                              f"{', '.join(missing[:5])}")
    if unexpected and strict:
        raise CheckpointError(f"{layout.name} checkpoint has {len(unexpected)} keys with no place in "
                              f"{type(module).__name__}, e.g. {', '.join(unexpected[:5])}; load it with "
                              f"strict=False (--ckpt-non-strict / init.strict=false) to use the rest")
    _fit_temporal(mapped, own, temporal_fix, report.notes)
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in mapped.items() if v.shape != own[k].shape]
    if bad:
        raise CheckpointError(f"{layout.name} checkpoint shapes do not fit the model: {'; '.join(bad[:5])}")
    module.load_state_dict(mapped, strict=False)
    report.loaded = sorted(mapped)
    report.ignored = sorted(ignored + unexpected + by_design)
    report.untouched = [k for k in own if k not in mapped and not k.startswith(plan.derived or ("\0",))]
    if isinstance(module, CheckpointTarget):
        report.notes.extend(module.after_official_load(report.loaded))
    return report
