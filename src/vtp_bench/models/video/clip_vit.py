"""CLIP's image tower applied to every frame of a video (CLIP4Clip, Prompt Switch), built with open_clip.

The tower is open_clip's ``VisionTransformer`` (so ``visual.*`` keys of open_clip / OpenAI checkpoints load
as they are); the forward is ours: SDPA attention, per-block gradient checkpointing and a per-layer hook.

A :class:`ClipLayerHook` lets a method change the inner loop without subclassing the encoder:

- ``extra_tokens(x, frames)``: after ``ln_pre``, x [B*T, L, W] -> [B*T, L + E, W] (append prompt tokens);
- ``attn_input(layer, h, frames)``: the LayerNorm-ed attention input of every layer, [B*T, L + E, W]; the
  residual stream is left alone (Prompt Switch's switch transposes the prompt tokens across frames here);
- ``layer_output(layer, x, frames)``: the residual stream after every layer;
- ``frame_feature(hidden, frames)``: [B*T, L + E, W] raw last hidden -> [B*T, W] per-frame feature before
  ``ln_post`` and ``proj`` (default: the CLS token; Prompt Switch's prompt aggregation replaces it).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vtp_bench.models.clip_common import CLIP_PRESETS, build_clip_tower, check_weights_file, run_clip_block
from vtp_bench.models.common import TowerOptions
from vtp_bench.models.layouts import CheckpointLayout, LayoutMap
from vtp_bench.models.outputs import EncoderOutput
from vtp_bench.registry import ENCODERS

FRAME_POOLINGS = ("normalized_mean", "mean")


class ClipLayerHook:
    """Identity hook; subclass and override what you need (see the module docstring)."""

    def extra_tokens(self, x: Tensor, frames: int) -> Tensor:
        return x

    def attn_input(self, layer: int, h: Tensor, frames: int) -> Tensor:
        return h

    def layer_output(self, layer: int, x: Tensor, frames: int) -> Tensor:
        return x

    def frame_feature(self, hidden: Tensor, frames: int) -> Tensor:
        return hidden[:, 0]


@ENCODERS.register("clip_vit")
class ClipViT(TowerOptions):
    """``forward(video [B, T, 3, H, W], video_mask [B, T] | None, hook=None) -> EncoderOutput`` with

    - ``frames`` [B, T, E]: per-frame embeddings, ``ln_post(frame feature) @ proj`` (E = CLIP's embed_dim);
    - ``pooled`` [B, E]: mean over the real frames of the L2-normalised per-frame embeddings
      (``frame_pooling="normalized_mean"``: CLIP4Clip's meanP and Prompt Switch) or of the raw ones (``"mean"``);
    - ``tokens`` [B, T * P, W]: the patch tokens after ``ln_post``, frame-major; ``grid`` = (T, h, w);
      ``mask`` [B, T * P] from ``video_mask``;
    - ``hidden`` [B, T, L + E, W]: the raw last hidden states (CLS, patches, hook tokens), before ``ln_post``.

    ``model`` is an open_clip config name ("ViT-B-32", "ViT-B-16") or a config dict; ``weights`` a local
    checkpoint (OpenAI TorchScript, open_clip or HuggingFace CLIP; the source is detected). ``quick_gelu``
    defaults to True, the activation of OpenAI's and HuggingFace's CLIP weights.
    """

    PRESETS: dict[str, dict[str, Any]] = CLIP_PRESETS

    def __init__(
        self,
        model: str | dict[str, Any] = "ViT-B-32",
        weights: str | None = None,
        quick_gelu: bool = True,
        frame_pooling: str = "normalized_mean",
        grad_checkpointing: bool = False,
        freeze: bool = False,
    ) -> None:
        super().__init__()
        if frame_pooling not in FRAME_POOLINGS:
            raise ValueError(f"frame_pooling must be one of {FRAME_POOLINGS}, got {frame_pooling!r}")
        check_weights_file(weights)
        self.visual = build_clip_tower(model, "vision", quick_gelu)
        if getattr(self.visual, "attn_pool", None) is not None or self.visual.pool_type != "tok":
            raise ValueError("clip_vit needs a CLS-token ViT (pool_type 'tok', no attentional pool)")
        self.frame_pooling = frame_pooling
        self.width = int(self.visual.proj.shape[1]) if self.visual.proj is not None else self.visual.transformer.width
        self.image_size = tuple(self.visual.image_size)
        self.grid = tuple(self.visual.grid_size)
        self.finish_init(weights, freeze, grad_checkpointing)

    def checkpoint_prefixes(self, layout: CheckpointLayout) -> LayoutMap | None:
        """CLIP's image tower in open_clip's names (``visual.*``), which every CLIP layout normalises to."""
        return LayoutMap({"visual.": "visual."}) if layout.keys == "open_clip" else None

    def _check_video(self, video: Tensor) -> None:
        if video.ndim != 5:
            raise ValueError(f"video must be [B, T, C, H, W], got shape {tuple(video.shape)}")
        if tuple(video.shape[-2:]) != self.image_size:
            raise ValueError(f"frames must be {self.image_size[0]} x {self.image_size[1]}, got "
                             f"{tuple(video.shape[-2:])}; the positional embedding is not interpolated")

    def embed(self, frames: Tensor) -> Tensor:
        """[N, 3, H, W] -> [N, L, W]: patchify, CLS, positional embedding, ``ln_pre`` (open_clip's order)."""
        v = self.visual
        x = v.conv1(frames).flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        return v.ln_pre(v.patch_dropout(x))

    def forward(
        self, video: Tensor, video_mask: Tensor | None = None, hook: ClipLayerHook | None = None
    ) -> EncoderOutput:
        self._check_video(video)
        b, t = video.shape[:2]
        if video_mask is not None and tuple(video_mask.shape) != (b, t):
            raise ValueError(f"video_mask must be [B, T] = {(b, t)}, got {tuple(video_mask.shape)}")
        hook = hook or ClipLayerHook()
        v = self.visual
        x = self.embed(video.flatten(0, 1))
        n_img = x.shape[1]
        x = hook.extra_tokens(x, t)
        for i, blk in enumerate(v.transformer.resblocks):
            x = self.run_block(run_clip_block, blk, x, lambda h, i=i: hook.attn_input(i, h, t))
            x = hook.layer_output(i, x, t)
        hidden = x
        feat = v.ln_post(hook.frame_feature(hidden, t))
        if v.proj is not None:
            feat = feat @ v.proj
        frames = feat.reshape(b, t, -1)
        weights = torch.ones(b, t, 1, dtype=frames.dtype, device=frames.device)
        if video_mask is not None:
            weights = video_mask.to(frames.dtype).unsqueeze(-1)
        per_frame = F.normalize(frames, dim=-1) if self.frame_pooling == "normalized_mean" else frames
        pooled = (per_frame * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        patches = v.ln_post(hidden[:, 1:n_img]).reshape(b, t * (n_img - 1), -1)
        mask = None
        if video_mask is not None:
            mask = video_mask.bool().repeat_interleave(n_img - 1, dim=1)
        return EncoderOutput(pooled=pooled, tokens=patches, mask=mask, grid=(t, *self.grid), frames=frames,
                             hidden=hidden.reshape(b, t, *hidden.shape[1:]))
