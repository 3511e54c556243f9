"""DemoVLP's ObjectTransformer: a transformer over detector region features (docs/methods/demovlp.md).

Inputs (batch keys agreed with the data pipeline): ``region_feats`` [B, T, K, 2048], ``region_boxes`` [B, T, K, 6]
(``x1/W, y1/H, x2/W, y2/H, w/W, h/H``, §1.1) and ``region_mask`` [B, T, K] bool, True = a real box.

Numerically the official module:
- token = ``object_embedding(feat) + pos_embedding(box)``; no per-slot embedding (the box geometry is the
  position); CLS gets ``custom_pos_embed[:, 0]`` (the rest of ``custom_pos_embed`` is unused), region tokens get
  ``temporal_embed[t]``;
- padding is an *additive* key bias ``(mask - 1) * 100`` (0 for real boxes, -100 for padding; CLS is real);
- Frozen's ``SpaceTimeBlock`` (LayerNorm eps 1e-6, qkv bias, MLP x4): CLS attends to every token, a region to
  CLS plus the regions of its own frame; with ``time_module=None`` (every shipped config) there is no temporal
  attention and ``norm3`` is an unused parameter; ``time_module="timeattn"`` adds Frozen's temporal branch;
- the final ``norm`` exists but is never applied; ``proj`` = Linear(768, 256, bias=False) on every token.

Parameter names equal the official keys, and ``base`` (8 frames, 30 regions) has 86,880,768 parameters.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import trunc_normal_
from torch import Tensor, nn

from vtp_bench.errors import InputShapeError
from vtp_bench.models.common import TowerOptions
from vtp_bench.models.layouts import CheckpointLayout, LayoutMap
from vtp_bench.models.outputs import EncoderOutput
from vtp_bench.models.video.space_time_vit import SpaceTimeBlock
from vtp_bench.registry import ENCODERS

BOX_DIM = 6
PAD_BIAS = 100.0  # the official additive mask: (mask - 1) * 100


@ENCODERS.register("object_transformer")
class ObjectTransformer(TowerOptions):
    """``forward(region_feats, region_boxes, region_mask=None) -> EncoderOutput``: ``tokens`` [B, 1 + T*K, out]
    (CLS, then the regions frame-major, projected), ``pooled`` = token 0, ``mask`` [B, 1 + T*K] bool."""

    PRESETS: dict[str, dict[str, Any]] = {
        "tiny": dict(feat_dim=2048, embed_dim=64, depth=2, num_heads=4, num_regions=30, num_frames=8, output_dim=32),
        "base": dict(feat_dim=2048, embed_dim=768, depth=12, num_heads=12, num_regions=30, num_frames=8,
                     output_dim=256),
    }

    def __init__(
        self,
        feat_dim: int = 2048,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        num_regions: int = 30,
        num_frames: int = 8,
        output_dim: int = 256,
        time_module: str | None = None,
        grad_checkpointing: bool = False,
        freeze: bool = False,
    ) -> None:
        super().__init__()
        if time_module not in (None, "", "timeattn"):
            raise ValueError(f"time_module must be None or 'timeattn', got {time_module!r}")
        self.feat_dim, self.num_regions, self.num_frames = feat_dim, num_regions, num_frames
        self.embed_dim = embed_dim
        self.width = output_dim
        self.object_embedding = nn.Linear(feat_dim, embed_dim)
        self.pos_embedding = nn.Linear(BOX_DIM, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.custom_pos_embed = nn.Parameter(torch.zeros(1, num_regions + 1, embed_dim))
        self.temporal_embed = nn.Parameter(torch.zeros(1, num_frames, embed_dim))
        self.blocks = nn.ModuleList(
            # DemoVLP builds its (unused by the shipped configs) time attention with time_init="rand"
            SpaceTimeBlock(embed_dim, num_heads, mlp_ratio, True, 0.0, "rand", time_attention=bool(time_module))
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)  # official: built (and loaded), never applied
        self.proj = nn.Linear(embed_dim, output_dim, bias=False)
        trunc_normal_(self.custom_pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.set_tower_options(freeze, grad_checkpointing)

    def checkpoint_prefixes(self, layout: CheckpointLayout) -> LayoutMap | None:
        """DemoVLP's ObjectTransformer, under its official names: ``object_model.*``."""
        return LayoutMap({"object_model.": ""}) if layout.keys == "demovlp" else None

    def forward(self, region_feats: Tensor, region_boxes: Tensor, region_mask: Tensor | None = None) -> EncoderOutput:
        if region_feats.ndim != 4 or region_feats.shape[-1] != self.feat_dim:
            raise ValueError(f"region_feats must be [B, T, K, {self.feat_dim}], got {tuple(region_feats.shape)}")
        b, t, k = region_feats.shape[:3]
        if tuple(region_boxes.shape) != (b, t, k, BOX_DIM):
            raise ValueError(f"region_boxes must be [B, T, K, 6] = {(b, t, k, BOX_DIM)}, "
                             f"got {tuple(region_boxes.shape)}")
        if t > self.num_frames:
            raise InputShapeError(f"got {t} frames of regions but the object transformer has temporal embeddings "
                                  f"for {self.num_frames} (its num_frames): set data.num_frames to at most "
                                  f"{self.num_frames}")
        if k != self.num_regions:  # the official model groups tokens by region_nums: other K would mix frames
            raise ValueError(f"got {k} regions per frame but the model is built for num_regions={self.num_regions}")
        if region_mask is None:
            region_mask = torch.ones(b, t, k, dtype=torch.bool, device=region_feats.device)
        elif tuple(region_mask.shape) != (b, t, k):
            raise ValueError(f"region_mask must be [B, T, K] = {(b, t, k)}, got {tuple(region_mask.shape)}")
        x = self.object_embedding(region_feats) + self.pos_embedding(region_boxes.to(region_feats.dtype))
        x = x + self.temporal_embed[:, :t, None, :]  # temporal_embed[t] on every region of frame t
        x = x.reshape(b, t * k, -1)
        cls = (self.cls_token + self.custom_pos_embed[:, :1]).expand(b, -1, -1)
        x = torch.cat([cls, x], dim=1)
        mask = torch.cat([region_mask.new_ones(b, 1), region_mask.reshape(b, t * k)], dim=1).bool()
        key_bias = (mask.to(x.dtype) - 1.0) * PAD_BIAS
        for blk in self.blocks:
            x = self.run_block(blk, x, t, key_bias)
        x = self.proj(x)
        return EncoderOutput(pooled=x[:, 0], tokens=x, mask=mask)
