"""What the CLIP towers share: building an open_clip tower from a config (never from the network) and running
open_clip's ``ResidualAttentionBlock`` with ``scaled_dot_product_attention``.

Parameters stay open_clip's own modules, so open_clip / OpenAI state dicts load with their key names; only the
forward is ours (SDPA attention and the hooks the methods need).
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vtp_bench.models.layouts import CheckpointLayout
from vtp_bench.registry import CHECKPOINT_LAYOUTS

# Presets of both towers: the two CLIP sizes of the papers and a tiny CPU size. The tiny model keeps CLIP's
# head width of 64 (OpenAI's checkpoints imply heads = width / 64) and the real vocabulary, so the BPE
# tokenizer that ships with open_clip works with it.
TINY_CLIP: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "patch_size": 16, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2},
}
# a CLIP state dict's text-tower keys (open_clip / OpenAI names: top level, beside ``visual.*``)
CLIP_TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")  # ints in OpenAI's TorchScript files
CLIP_PRESETS: dict[str, dict[str, Any]] = {
    "ViT-B-32": {"model": "ViT-B-32"},
    "ViT-B-16": {"model": "ViT-B-16"},
    "tiny": {"model": TINY_CLIP},
}


def clip_model_config(model: str | Mapping[str, Any]) -> dict[str, Any]:
    """An open_clip model config: a built-in name (its JSON ships in the wheel) or the dict itself."""
    if isinstance(model, Mapping):
        cfg = copy.deepcopy(dict(model))
    else:
        import open_clip

        cfg = open_clip.get_model_config(model)
        if cfg is None:
            raise ValueError(f"unknown open_clip model config {model!r} (e.g. 'ViT-B-32', 'ViT-B-16')")
    if "embed_dim" not in cfg:
        raise ValueError("an open_clip model config needs embed_dim (and vision_cfg / text_cfg)")
    return cfg


def build_clip_tower(model: str | Mapping[str, Any], tower: str, quick_gelu: bool) -> nn.Module:
    """open_clip's VisionTransformer (``tower="vision"``) or TextTransformer (``"text"``) from a config."""
    from open_clip.model import _build_text_tower, _build_vision_tower

    cfg = clip_model_config(model)
    quick_gelu = quick_gelu or bool(cfg.get("quick_gelu", False))
    if tower == "vision":
        vision = dict(cfg["vision_cfg"])
        if vision.get("timm_model_name") or isinstance(vision.get("layers"), (list, tuple)):
            raise ValueError("clip_vit supports open_clip's ViT towers only (no timm or ResNet towers)")
        return _build_vision_tower(cfg["embed_dim"], vision, quick_gelu=quick_gelu)
    text = dict(cfg["text_cfg"])
    if text.get("hf_model_name"):
        raise ValueError("clip_text supports open_clip's own text transformer only (use hf_text for HF towers)")
    return _build_text_tower(cfg["embed_dim"], text, quick_gelu=quick_gelu)


def mha_sdpa(attn: nn.MultiheadAttention, x: Tensor, attn_mask: Tensor | None = None, causal: bool = False) -> Tensor:
    """Self-attention of a batch-first ``nn.MultiheadAttention`` (packed in_proj) through SDPA. x [B, L, D]."""
    b, n, d = x.shape
    h = attn.num_heads
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal and attn_mask is None)
    return attn.out_proj(out.transpose(1, 2).reshape(b, n, d))


def run_clip_block(
    block: nn.Module,
    x: Tensor,
    attn_input: Callable[[Tensor], Tensor] | None = None,
    attn_mask: Tensor | None = None,
    causal: bool = False,
) -> Tensor:
    """open_clip's pre-LN ``ResidualAttentionBlock``; ``attn_input`` maps ``ln_1(x)`` (the attention input)
    while the residual stream stays as it is (Prompt Switch's switch)."""
    h = block.ln_1(x)
    if attn_input is not None:
        h = attn_input(h)
    x = x + block.ls_1(mha_sdpa(block.attn, h, attn_mask, causal))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def check_weights_file(weights: str | None) -> None:
    if weights is not None:
        from pathlib import Path

        if not Path(weights).expanduser().is_file():
            raise FileNotFoundError(
                f"weights {weights!r} is not a local file (weights are never downloaded; give the path of an "
                "OpenAI .pt, an open_clip state dict or a HuggingFace CLIP pytorch_model.bin / model.safetensors)"
            )


# ------------------------------------------------------------------------------------- released layouts
def hf_clip_to_open_clip(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """HuggingFace ``CLIPModel`` state dict -> open_clip ``CLIP`` state dict (same numbers, open_clip's names)."""
    from vtp_bench.models.checkpoints import CheckpointError

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


@CHECKPOINT_LAYOUTS.register("open_clip")
class OpenClipLayout(CheckpointLayout):
    """An open_clip ``CLIP`` state dict: ``visual.*`` and the text tower's keys at the top level."""

    keys, aliases, family, priority = "open_clip", ("clip",), "open_clip", 40

    def recognises(self, sd: Mapping[str, Any]) -> bool:
        return any(k.startswith("visual.") for k in sd) or "token_embedding.weight" in sd

    def normalise(self, sd: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in sd.items() if k not in OPENAI_EXTRA_KEYS}


@CHECKPOINT_LAYOUTS.register("openai")
class OpenAILayout(OpenClipLayout):
    """OpenAI's CLIP ``.pt`` (TorchScript, read with ``torch.jit.load`` as open_clip's ``load_openai_model``
    does): open_clip's names plus three ints (``input_resolution``, ``context_length``, ``vocab_size``)."""

    aliases, priority = (), 45

    def recognises(self, sd: Mapping[str, Any]) -> bool:
        return super().recognises(sd) and any(k in sd for k in OPENAI_EXTRA_KEYS)


@CHECKPOINT_LAYOUTS.register("hf_clip")
class HFClipLayout(CheckpointLayout):
    """HuggingFace ``CLIPModel`` weights (``vision_model.*``, ``text_model.*``, ``visual_projection``,
    ``text_projection``, ``logit_scale``), converted to open_clip's names (``hf_clip_to_open_clip``)."""

    keys, aliases, priority = "open_clip", ("huggingface", "hf"), 70

    def recognises(self, sd: Mapping[str, Any]) -> bool:
        return any(k.startswith(("vision_model.", "visual_projection", "text_model.encoder.layers.")) for k in sd)

    def normalise(self, sd: Mapping[str, Any]) -> dict[str, Any]:
        return hf_clip_to_open_clip(sd)
