"""The one output type of every encoder: global feature plus the token-level outputs methods reach into."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class EncoderOutput:
    pooled: Tensor  # [B, D] global feature (CLS for ViT / BERT-style text, EOT for CLIP text, or a mean)
    tokens: Tensor  # [B, N, D] every output token after the final norm (video: CLS, then patches frame-major)
    mask: Tensor | None = None  # [B, N] bool, True = real token (text padding, padded video frames)
    grid: tuple[int, int, int] | None = None  # (frames, h, w) of the video patch tokens
    frames: Tensor | None = None  # [B, T, D] per-frame global features (per-frame towers: clip_vit)
    hidden: Tensor | None = None  # last hidden states before the final norm (clip_vit: incl. hook tokens)
