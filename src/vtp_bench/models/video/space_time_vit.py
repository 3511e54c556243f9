"""Frozen-in-Time's SpaceTimeTransformer, numerically (m-bain/frozen-in-time ``model/video_transformer.py``).

Divided space-time attention with the official quirks (specs/miles.md §1.1):
- in both attentions the CLS query attends to *all* tokens; each patch query attends to its group (same
  frame for space, same position for time) plus the CLS key/value;
- block order ``t = timeattn(norm3(x)); s = attn(norm1(x + t)); x = x + s; x = x + mlp(norm2(x))`` — the
  time-attention output feeds the spatial attention but is *not* added to the residual stream;
- LayerNorm eps 1e-6, qkv bias, positional embedding tiled over frames plus a per-frame temporal
  embedding, truncated so that fewer frames than ``num_frames`` work.
Parameter names equal the official state-dict keys (without the ``video_model.`` prefix).
Attention runs through ``scaled_dot_product_attention`` (same maths as the explicit softmax).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vtp_bench.models.outputs import EncoderOutput
from vtp_bench.registry import ENCODERS


class VarAttention(nn.Module):
    """Attention over groups of patch tokens (frames or positions), with the CLS token attending to all."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, initialize: str = "rand") -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if initialize == "zeros":
            # official fine-tuning init: qkv 0, proj weight 1, so the temporal branch starts as a constant
            # the block can move away from (a 0*0 product would be stuck)
            nn.init.zeros_(self.qkv.weight)
            if self.qkv.bias is not None:
                nn.init.zeros_(self.qkv.bias)
            nn.init.ones_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)
        elif initialize != "rand":
            raise ValueError(f"time_init must be 'rand' or 'zeros', got {initialize!r}")

    def forward(self, x: Tensor, frames: int, mode: str) -> Tensor:
        """x [B, 1 + F*P, D]; ``mode`` "space" groups tokens by frame, "time" by spatial position."""
        b, n, d = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)  # each [B, H, N, hd]
        cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v)  # CLS attends to every token
        p = (n - 1) // frames

        def group(t: Tensor) -> Tensor:  # [B, H, F*P, hd] -> [B*G, H, L, hd]
            t = t.reshape(b, h, frames, p, -1)
            t = t.permute(0, 2, 1, 3, 4) if mode == "space" else t.permute(0, 3, 1, 2, 4)
            return t.reshape(-1, h, t.shape[-2], t.shape[-1])

        groups = frames if mode == "space" else p

        def with_cls(t: Tensor, cls: Tensor) -> Tensor:
            cls = cls.unsqueeze(1).expand(b, groups, h, 1, cls.shape[-1]).reshape(b * groups, h, 1, -1)
            return torch.cat([cls, group(t)], dim=2)

        out = F.scaled_dot_product_attention(
            group(q[:, :, 1:]), with_cls(k[:, :, 1:], k[:, :, :1]), with_cls(v[:, :, 1:], v[:, :, :1])
        )
        out = out.reshape(b, groups, h, -1, out.shape[-1])
        out = out.permute(0, 2, 1, 3, 4) if mode == "space" else out.permute(0, 2, 3, 1, 4)
        out = torch.cat([cls_out, out.reshape(b, h, frames * p, -1)], dim=2)  # [B, H, N, hd]
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class SpaceTimeBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop_path: float,
                 time_init: str) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = VarAttention(dim, num_heads, qkv_bias)
        self.timeattn = VarAttention(dim, num_heads, qkv_bias, initialize=time_init)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        t = self.timeattn(self.norm3(x), frames, "time")
        s = self.attn(self.norm1(x + t), frames, "space")
        x = x + self.drop_path(s)  # the official order: t is not added to the residual stream
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VideoPatchEmbed(nn.Module):
    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.img_size, self.patch_size = img_size, patch_size
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:  # [B, F, C, H, W] -> [B, F*P, D]
        b, f = x.shape[:2]
        x = self.proj(x.flatten(0, 1))
        return x.flatten(2).transpose(1, 2).reshape(b, f * x.shape[-1] * x.shape[-2], -1)


@ENCODERS.register("space_time_vit")
class SpaceTimeViT(nn.Module):
    """Video tower of Frozen-in-Time / MILES / RegionLearner. ``width`` is the output dimension."""

    PRESETS = {
        "tiny": dict(img_size=64, patch_size=16, embed_dim=128, depth=4, num_heads=4, num_frames=4),
        "base": dict(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, num_frames=4),
    }

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        num_frames: int = 4,
        time_init: str = "rand",
        drop_path_rate: float = 0.0,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.width = embed_dim
        self.num_frames = num_frames
        self.grad_checkpointing = grad_checkpointing
        self.patch_embed = VideoPatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.patches_per_frame = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patches_per_frame + 1, embed_dim))
        self.temporal_embed = nn.Parameter(torch.zeros(1, num_frames, embed_dim))
        dpr = [drop_path_rate * i / max(1, depth - 1) for i in range(depth)]  # linspace(0, rate, depth)
        self.blocks = nn.ModuleList(
            SpaceTimeBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, dpr[i], time_init) for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        if self.pos_embed.device.type != "meta":
            trunc_normal_(self.pos_embed, std=0.02)
            trunc_normal_(self.cls_token, std=0.02)
            if num_frames == 1:  # the official code re-initialises every layer only for image models
                self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def embed(self, video: Tensor, patch_hook: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """[B, F, 3, H, W] -> tokens [B, 1 + F*P, D] with positional and temporal embeddings."""
        f = video.shape[1]
        if f > self.num_frames:
            raise ValueError(
                f"got {f} frames but the model has temporal embeddings for {self.num_frames}; "
                "build it with num_frames >= the clip length"
            )
        x = self.patch_embed(video)
        if patch_hook is not None:  # e.g. MILES replaces masked patch embeddings by a mask token here
            x = patch_hook(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        tiled = self.pos_embed[:, 1:].repeat(1, self.num_frames, 1)
        tiled = tiled + self.temporal_embed.repeat_interleave(self.patches_per_frame, dim=1)
        pos = torch.cat([self.pos_embed[:, :1], tiled], dim=1)
        return x + pos[:, : x.shape[1]]

    def forward(
        self, video: Tensor, video_mask: Tensor | None = None, patch_hook: Callable[[Tensor], Tensor] | None = None
    ) -> EncoderOutput:
        """``video_mask`` (True = real frame) is returned as a token mask; like the official model, padded
        (all-zero) frames still take part in attention."""
        b, f = video.shape[:2]
        x = self.embed(video, patch_hook)
        for blk in self.blocks:
            if self.grad_checkpointing and self.training:
                x = checkpoint(blk, x, f, use_reentrant=False)
            else:
                x = blk(x, f)
        x = self.norm(x)
        mask = None
        if video_mask is not None:
            per_patch = video_mask.repeat_interleave(self.patches_per_frame, dim=1)
            mask = torch.cat([video_mask.new_ones(b, 1), per_patch], dim=1)
        side = self.patch_embed.img_size // self.patch_embed.patch_size
        return EncoderOutput(pooled=x[:, 0], tokens=x, mask=mask, grid=(f, side, side))
