"""Load released checkpoints into vtp_bench's encoders and methods: ``load_official(module, path_or_sd, source)``.

Sources (detected from the key names when ``source`` is None):

- ``frozen``: Frozen-in-Time, MILES and RegionLearner ``.pth`` files. ``{"state_dict": ...}`` nesting and the
  DataParallel ``module.`` prefix are unwrapped; keys ``video_model.*`` (SpaceTimeTransformer),
  ``text_model.<HF DistilBERT keys>``, ``txt_proj.*`` (MCQ/MILES call it ``text_proj.*``) and ``vid_proj.*``;
  RegionLearner's head ``video_model.RegionLearner.*`` goes where the method's ``official_prefixes`` say.
  ``temporal_embed`` is fitted to the model's ``num_frames`` as Frozen's ``_inflate_positional_embeds`` does:
  a checkpoint with more frames is truncated; one with fewer is padded with zeros (``temporal_fix="zeros"``,
  Frozen's default) or interpolated (``"interp"`` = nearest, ``"bilinear"``).
- ``demovlp``: DemoVLP's ``ObjectRelation`` files (``object_model.*`` = the ObjectTransformer under its official
  names, ``text_model.<HF DistilBERT keys>``, ``txt_proj.*``), and vtp_bench's own DemoVLP checkpoints (the same
  keys under ``method.``, to fine-tune from a vtp_bench pre-training run); ``object_model.temporal_embed`` is
  fitted to the model's frames as above (DemoVLP pre-trains with 1 frame and fine-tunes with 8, zeros).
- ``open_clip`` / ``openai``: open_clip state dicts and OpenAI's CLIP files. OpenAI's ``.pt`` files are
  TorchScript archives, read with ``torch.jit.load`` (what open_clip's ``load_openai_model`` does); their state
  dict has open_clip's key names plus three ints (``input_resolution``, ``context_length``, ``vocab_size``).
- ``hf_clip``: HuggingFace ``CLIPModel`` weights (``vision_model.*``, ``text_model.*``, ``visual_projection``,
  ``text_projection``, ``logit_scale``), converted to open_clip's layout: q/k/v projections packed into
  ``in_proj``, the projection matrices transposed.

Targets: a ``SpaceTimeViT`` or ``HFTextEncoder`` alone, a ``ClipViT`` / ``ClipText`` alone, or any module holding
them (a method: ``video_model`` / ``text_model`` / ``txt_proj`` / ``vid_proj`` for Frozen files; every CLIP tower
and a ``logit_scale`` parameter for CLIP files). Every parameter of the parts a file covers must be in it.
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

SOURCES = ("frozen", "open_clip", "openai", "hf_clip", "demovlp")
SOURCE_ALIASES = {"miles": "frozen", "regionlearner": "frozen", "frozen-in-time": "frozen", "clip": "open_clip",
                  "huggingface": "hf_clip", "hf": "hf_clip"}
TEMPORAL_FIXES = ("zeros", "interp", "bilinear")
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
DEMOVLP_PREFIXES = ("object_model.", "method.object_model.")
CLIP_TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


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


def detect_source(sd: Mapping[str, Any]) -> str:
    keys = list(sd)
    if any(k.startswith(DEMOVLP_PREFIXES) for k in keys):
        return "demovlp"
    if any(k.startswith(("vision_model.", "visual_projection")) or k.startswith("text_model.encoder.layers.")
           for k in keys):
        return "hf_clip"
    if any(k.startswith(("video_model.", "vid_proj.", "txt_proj.", "text_proj.")) for k in keys) or any(
        k.startswith("text_model.") for k in keys
    ):
        return "frozen"
    if any(k.startswith("visual.") for k in keys) or "token_embedding.weight" in sd:
        return "openai" if any(k in sd for k in OPENAI_EXTRA_KEYS) else "open_clip"
    raise CheckpointError(
        "cannot tell the checkpoint's source from its keys (first: "
        f"{', '.join(keys[:5])}); give it explicitly: one of {', '.join(SOURCES)}"
    )


# ----------------------------------------------------------------------------------------- conversions
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


def hf_clip_to_open_clip(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """HuggingFace ``CLIPModel`` state dict -> open_clip ``CLIP`` state dict (same numbers, open_clip's names)."""
    out: dict[str, Tensor] = {}
    towers = (("vision_model.", "visual."), ("text_model.", ""))
    simple = {
        "vision_model.embeddings.class_embedding": "visual.class_embedding",
        "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
        "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
        "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
        "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
        "vision_model.post_layernorm.weight": "visual.ln_post.weight",
        "vision_model.post_layernorm.bias": "visual.ln_post.bias",
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
        "logit_scale": "logit_scale",
    }
    layer_parts = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                   "self_attn.out_proj": "attn.out_proj"}
    qkv: dict[str, dict[str, Tensor]] = {}
    unknown = []
    for key, value in sd.items():
        if key.endswith("position_ids"):
            continue  # a buffer of older transformers versions
        if key in simple:
            out[simple[key]] = value
        elif key == "visual_projection.weight":
            out["visual.proj"] = value.T.contiguous()
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        else:
            for hf_prefix, oc_prefix in towers:
                head = f"{hf_prefix}encoder.layers."
                if key.startswith(head):
                    idx, rest = key[len(head):].split(".", 1)
                    block = f"{oc_prefix}transformer.resblocks.{idx}."
                    part, kind = rest.rsplit(".", 1)  # e.g. self_attn.q_proj / weight
                    if part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                        qkv.setdefault(f"{block}attn.in_proj_{kind}", {})[part[-6]] = value
                    elif part in layer_parts:
                        out[f"{block}{layer_parts[part]}.{kind}"] = value
                    else:
                        unknown.append(key)
                    break
            else:
                unknown.append(key)
    for key, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"HF CLIP checkpoint: {key} lacks one of the q/k/v projections")
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    if unknown:
        raise CheckpointError(f"HF CLIP checkpoint: no open_clip counterpart for {', '.join(unknown[:5])}")
    return out


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


def layout(module: Any) -> str | None:
    """The checkpoint layout an encoder declares (``CHECKPOINT_LAYOUT``: ``frozen_video``, ``frozen_text``,
    ``clip_visual``, ``clip_text``, ``demovlp_objects``), None for anything else. Towers are recognised by it, so
    this module imports none of them (the towers import it, to load their ``weights``)."""
    return getattr(type(module), "CHECKPOINT_LAYOUT", None)


def _is_tower(module: nn.Module) -> bool:
    """A single encoder: a file covering more (the other tower, projections) is loaded partially by design."""
    return layout(module) is not None


def _frozen_mapping(module: nn.Module, sd: Mapping[str, Any]) -> tuple[dict[str, str], Any]:
    """checkpoint prefix -> our prefix for Frozen-layout files, and the SpaceTimeViT that gets the video keys.
    A method may name further parts of the file in ``official_prefixes`` (checkpoint prefix -> its own), e.g.
    RegionLearner's head; each is mapped when the file has it (a file without it leaves that part as built)."""
    if layout(module) == "frozen_video":
        return {"video_model.": ""}, module
    if layout(module) == "frozen_text":
        return {"text_model.": "model."}, None
    for path, m in module.named_modules():
        video, text = getattr(m, "video_model", None), getattr(m, "text_model", None)
        is_video, is_text = layout(video) == "frozen_video", layout(text) == "frozen_text"
        if is_video or is_text:
            pre = f"{path}." if path else ""
            mapping = {"txt_proj.": f"{pre}txt_proj.", "vid_proj.": f"{pre}vid_proj."}
            if is_video:
                mapping["video_model."] = f"{pre}video_model."
            if is_text:
                mapping["text_model."] = f"{pre}text_model.model."
            for src, dst in getattr(m, "official_prefixes", {}).items():
                if any(k.startswith(src) for k in sd):
                    mapping[src] = f"{pre}{dst}"
            return mapping, video if is_video else None
    raise CheckpointError(
        f"a Frozen-in-Time / MILES / RegionLearner checkpoint needs a space_time_vit or hf_text tower; "
        f"{type(module).__name__} has neither"
    )


def _demovlp_mapping(module: nn.Module) -> tuple[dict[str, str], Any]:
    """checkpoint prefix -> our prefix for DemoVLP files (official, or vtp_bench's under ``method.``), and the
    ObjectTransformer whose ``temporal_embed`` gets fitted."""
    for path, m in module.named_modules():
        if layout(getattr(m, "object_model", None)) == "demovlp_objects":
            pre = f"{path}." if path else ""
            mapping = {}
            for src in ("", "method."):
                mapping.update({f"{src}object_model.": f"{pre}object_model.", f"{src}txt_proj.": f"{pre}txt_proj.",
                                f"{src}text_model.": f"{pre}text_model.model."})
            mapping["method.text_model.model."] = f"{pre}text_model.model."
            if getattr(m, "backbone", None) is not None:  # vtp_bench's RoI-pooling variant
                mapping["method.backbone."] = f"{pre}backbone."
            return mapping, m.object_model
    if layout(module) == "demovlp_objects":
        return {"object_model.": "", "method.object_model.": ""}, module
    raise CheckpointError(f"a DemoVLP checkpoint needs an object_transformer tower (object_model); "
                          f"{type(module).__name__} has none")


def _clip_mapping(module: nn.Module) -> dict[str, str]:
    if type(module).__name__ == "CLIP" and hasattr(module, "visual"):  # an open_clip model itself
        return {"": ""}
    mapping: dict[str, str] = {}
    for path, m in module.named_modules():
        pre = f"{path}." if path else ""
        if layout(m) == "clip_visual":
            mapping["visual."] = f"{pre}visual."
        elif layout(m) == "clip_text":
            for k in CLIP_TEXT_KEYS:
                mapping[k] = f"{pre}text.{k}"
    names = [n for n, _ in module.named_parameters() if n.split(".")[-1] == "logit_scale"]
    if len(names) == 1:
        mapping["logit_scale"] = names[0]
    if not any(k in mapping for k in ("visual.", "token_embedding.")):
        raise CheckpointError(f"a CLIP checkpoint needs a clip_vit or clip_text tower; "
                              f"{type(module).__name__} has none")
    return mapping


def _remap(sd: Mapping[str, Tensor], mapping: Mapping[str, str]) -> tuple[dict[str, Tensor], list[str]]:
    out, ignored = {}, []
    prefixes = sorted(mapping, key=len, reverse=True)
    for key, value in sd.items():
        for p in prefixes:
            if key.startswith(p):
                out[mapping[p] + key[len(p):]] = value
                break
        else:
            ignored.append(key)
    return out, ignored


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
    docstring. ``strict``: checkpoint keys that have no place in the module are an error (else reported)."""
    if source is not None:
        source = SOURCE_ALIASES.get(source.lower(), source.lower())
        if source not in SOURCES:
            raise CheckpointError(f"unknown checkpoint source {source!r}; known: {', '.join(SOURCES)}")
    obj = path_or_state_dict
    if isinstance(obj, (str, Path)):
        obj = load_checkpoint(obj, trust)
    sd = state_dict_of(obj)
    if source is None:
        source = detect_source(sd)
    else:
        try:
            detected = detect_source(sd)
        except CheckpointError:
            detected = source
        family = {"openai": "open_clip"}
        if family.get(detected, detected) != family.get(source, source):
            raise CheckpointError(f"checkpoint source {source!r} was given, but the keys are those of a "
                                  f"{detected!r} checkpoint (e.g. {next(iter(sd))})")
    report = LoadReport(source)
    own = module.state_dict()

    if source == "frozen":
        sd = {("txt_proj." + k[len("text_proj."):] if k.startswith("text_proj.") else k): v for k, v in sd.items()}
        sd = {k: v for k, v in sd.items() if not k.endswith("embeddings.position_ids")}
        mapping, video = _frozen_mapping(module, sd)
        key = "video_model.temporal_embed"
        if video is not None and key in sd and sd[key].shape[1] != video.num_frames:
            report.notes.append(f"temporal_embed: checkpoint has {sd[key].shape[1]} frames, model "
                                f"{video.num_frames}; fitted with {temporal_fix}")
            sd[key] = inflate_temporal_embed(sd[key], video.num_frames, temporal_fix)
    elif source == "demovlp":
        sd = {k: v for k, v in sd.items() if not k.endswith("embeddings.position_ids")}
        mapping, objects = _demovlp_mapping(module)
        for key in ("object_model.temporal_embed", "method.object_model.temporal_embed"):
            if key in sd and sd[key].shape[1] != objects.num_frames:
                report.notes.append(f"temporal_embed: checkpoint has {sd[key].shape[1]} frames, model "
                                    f"{objects.num_frames}; fitted with {temporal_fix}")
                sd[key] = inflate_temporal_embed(sd[key], objects.num_frames, temporal_fix)
    else:
        if source == "hf_clip":
            sd = hf_clip_to_open_clip(sd)
        sd = {k: v for k, v in sd.items() if k not in OPENAI_EXTRA_KEYS}
        mapping = _clip_mapping(module)

    mapped, ignored = _remap(sd, mapping)  # ignored: e.g. the text tower's keys when loading a video tower
    if ignored and strict and not _is_tower(module):
        parts = sorted({k.split(".")[0] for k in ignored})
        raise CheckpointError(f"{source} checkpoint has parts {type(module).__name__} has no tower for "
                              f"({', '.join(parts)}: {len(ignored)} keys, e.g. {ignored[0]}); load it with "
                              f"strict=False (--ckpt-non-strict / init.strict=false) to use the rest")
    unexpected = [k for k in mapped if k not in own]
    mapped = {k: v for k, v in mapped.items() if k in own}
    covered = [k for k in own if any(k.startswith(mapping[p]) for p in mapping)]
    missing = [k for k in covered if k not in mapped]
    if missing:
        raise CheckpointError(f"{source} checkpoint lacks {len(missing)} of the model's keys, e.g. "
                              f"{', '.join(missing[:5])}")
    if unexpected and strict:
        raise CheckpointError(f"{source} checkpoint has {len(unexpected)} keys with no place in "
                              f"{type(module).__name__}, e.g. {', '.join(unexpected[:5])}; load it with "
                              f"strict=False (--ckpt-non-strict / init.strict=false) to use the rest")
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in mapped.items() if v.shape != own[k].shape]
    if bad:
        raise CheckpointError(f"{source} checkpoint shapes do not fit the model: {'; '.join(bad[:5])}")
    module.load_state_dict(mapped, strict=False)
    report.loaded = sorted(mapped)
    report.ignored = sorted(ignored + unexpected)
    report.untouched = [k for k in own if k not in mapped]
    hook = getattr(module, "after_official_load", None)  # a method whose extra parts derive from the loaded ones
    if callable(hook):  # (MILES: the snapshot encoder starts as a copy of the loaded video encoder)
        report.notes.extend(hook(report.loaded))
    return report
