"""Parameter counts of every encoder preset, built on the meta device (no memory, no weights)."""

from __future__ import annotations

import torch
from torch import nn

from vtp_bench.registry import ENCODERS


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


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


def preset_param_table() -> str:
    lines = ["| encoder | preset | parameters |", "|---|---|---:|"]
    lines += [f"| {n} | {p} | {c:,} |" for n, p, c in preset_param_counts()]
    return "\n".join(lines)
