"""Parameter counts of every encoder preset, built on the meta device (no memory, no weights)."""

from __future__ import annotations

import torch
from torch import nn

from vtp_bench.registry import ENCODERS


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_counts(module: nn.Module) -> dict[str, int]:
    """Trainable and total parameters (shared tensors once): the model-size half of what a result cost."""
    params = list(module.parameters())
    return {"trainable_params": sum(p.numel() for p in params if p.requires_grad),
            "total_params": sum(p.numel() for p in params)}


def preset_param_counts() -> list[tuple[str, str, int]]:
    rows = []
    for name in ENCODERS.names():
        cls = ENCODERS.get(name)
        for preset, kwargs in getattr(cls, "PRESETS", {}).items():
            try:
                with torch.device("meta"):
                    model = cls(**kwargs)
            except RuntimeError:  # presets that load local weights cannot be built on the meta device
                model = cls(**kwargs)
            rows.append((name, preset, count_parameters(model)))
    return rows


FULL_CLIP = "full CLIP (clip_vit + clip_text + logit_scale)"


def full_clip_param_counts(rows: list[tuple[str, str, int]] | None = None) -> list[tuple[str, str, int]]:
    """Whole CLIP models, the size papers quote (ViT-B/32: 151,277,313): both towers of one preset plus the
    learnable temperature, which the towers leave to the method."""
    counts = {(n, p): c for n, p, c in (rows if rows is not None else preset_param_counts())}
    vision = {p: c for (n, p), c in counts.items() if n == "clip_vit"}
    text = {p: c for (n, p), c in counts.items() if n == "clip_text"}
    return [(FULL_CLIP, p, vision[p] + text[p] + 1) for p in vision if p in text]


def preset_param_table() -> str:
    rows = preset_param_counts()
    lines = ["| encoder | preset | parameters |", "|---|---|---:|"]
    lines += [f"| {n} | {p} | {c:,} |" for n, p, c in rows + full_clip_param_counts(rows)]
    return "\n".join(lines)
