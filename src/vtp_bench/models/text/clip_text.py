"""CLIP's text tower (open_clip's ``TextTransformer``) with open_clip's BPE tokenizer, which ships in the wheel.

Causal attention through SDPA, final LayerNorm, and the feature of the end-of-text token (the highest id of
each row, open_clip's and OpenAI's "argmax" pooling) projected by ``text_projection``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from vtp_bench.models.clip_common import (
    CLIP_PRESETS,
    CLIP_TEXT_KEYS,
    build_clip_tower,
    check_weights_file,
    run_clip_block,
)
from vtp_bench.models.common import TowerOptions
from vtp_bench.models.layouts import CheckpointLayout, LayoutMap
from vtp_bench.models.outputs import EncoderOutput
from vtp_bench.registry import ENCODERS


@ENCODERS.register("clip_text")
class ClipText(TowerOptions):
    """``forward(texts: list[str] | LongTensor [B, L]) -> EncoderOutput``: ``pooled`` [B, E] the projected EOT
    feature; ``tokens`` [B, L, W] every position after ``ln_final`` (unprojected); ``mask`` [B, L] True up to
    and including the EOT token (open_clip pads with 0, so padding is masked by position, not by id)."""

    PRESETS: dict[str, dict[str, Any]] = CLIP_PRESETS

    def __init__(
        self,
        model: str | dict[str, Any] = "ViT-B-32",
        weights: str | None = None,
        quick_gelu: bool = True,
        grad_checkpointing: bool = False,
        freeze: bool = False,
    ) -> None:
        super().__init__()
        check_weights_file(weights)
        self.text = build_clip_tower(model, "text", quick_gelu)
        t = self.text
        if t.cls_emb is not None or t.pool_type != "argmax" or t.attn_mask is None:
            raise ValueError("clip_text supports CLIP's causal text tower with EOT (argmax) pooling only")
        if t.text_projection is not None and not isinstance(t.text_projection, torch.nn.Parameter):
            raise ValueError("clip_text supports CLIP's bias-free text_projection only")
        self.context_length = int(t.context_length)
        self.width = int(t.text_projection.shape[1]) if t.text_projection is not None else int(t.width)
        self._tokenizer = None
        self.finish_init(weights, freeze, grad_checkpointing)

    def checkpoint_prefixes(self, layout: CheckpointLayout) -> LayoutMap | None:
        """CLIP's text tower in open_clip's names (top-level in a CLIP state dict), under ``text.`` here."""
        return LayoutMap({k: f"text.{k}" for k in CLIP_TEXT_KEYS}) if layout.keys == "open_clip" else None

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        if self._tokenizer is None:
            from open_clip.tokenizer import SimpleTokenizer

            self._tokenizer = SimpleTokenizer(context_length=self.context_length)
        ids = self._tokenizer(list(texts))
        if int(ids.max()) >= self.text.vocab_size:
            raise ValueError(f"token id {int(ids.max())} is outside the model's vocabulary ({self.text.vocab_size})")
        return ids

    def forward(self, texts: Sequence[str] | Tensor) -> EncoderOutput:
        t = self.text
        ids = texts if isinstance(texts, Tensor) else self.tokenize(texts)
        ids = ids.to(t.token_embedding.weight.device)
        n = ids.shape[1]
        if n > t.positional_embedding.shape[0]:
            raise ValueError(f"{n} tokens but the context length is {t.positional_embedding.shape[0]}")
        x = t.token_embedding(ids) + t.positional_embedding[:n]
        for blk in t.transformer.resblocks:
            x = self.run_block(run_clip_block, blk, x, None, None, True)
        x = t.ln_final(x)
        eot = ids.argmax(dim=-1)
        pooled = x[torch.arange(x.shape[0], device=x.device), eot]
        if t.text_projection is not None:
            pooled = pooled @ t.text_projection
        mask = torch.arange(n, device=ids.device)[None, :] <= eot[:, None]
        return EncoderOutput(pooled=pooled, tokens=x, mask=mask)
