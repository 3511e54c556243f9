"""Frozen-in-Time's SpaceTimeTransformer, numerically (m-bain/frozen-in-time ``model/video_transformer.py``).

Divided space-time attention with the official quirks (docs/methods/miles.md):

- in both attentions the CLS query attends to *all* tokens, and each patch query attends to its group (the
  same frame for space, the same spatial position for time) plus the CLS key/value;
- block order ``t = timeattn(norm3(x)); s = attn(norm1(x + t)); x = x + s; x = x + mlp(norm2(x))``: the
  time-attention output feeds the spatial attention but is *not* added to the residual stream;
- LayerNorm eps 1e-6, qkv bias, scale ``head_dim ** -0.5``; the positional embedding (CLS + one frame of
  patches) is tiled over ``num_frames`` frames plus a per-frame temporal embedding and truncated to the
  current token count, so fewer frames than ``num_frames`` work (more are refused);
- ``time_init="zeros"`` sets the temporal qkv weight/bias to 0, its proj weight to 1 and proj bias to 0, so
  the temporal branch outputs exactly 0 at start and the model is a per-frame ViT (with the CLS token
  pooling all frames);
- for ``num_frames > 1`` only ``pos_embed`` and ``cls_token`` are re-initialised (trunc-normal 0.02); every
  other layer keeps PyTorch's default init, as in the official code (``_init_weights`` runs only for 1 frame).

Padded frames (zeros, as Frozen's loader writes them) take part in attention exactly as in the official model;
``video_mask`` only comes back as the token mask of the output.

Parameter names equal the official state-dict keys without the ``video_model.`` prefix, and a timm ViT
state dict loads with ``strict=False`` (missing: ``temporal_embed`` and the temporal branch; unexpected: the
head), which is how Frozen initialises from ImageNet weights.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import Tensor, nn

from vtp_bench.errors import InputShapeError
from vtp_bench.models.common import TowerOptions
from vtp_bench.models.layouts import CheckpointLayout, LayoutMap
from vtp_bench.models.outputs import EncoderOutput
from vtp_bench.registry import ENCODERS

TIME_INITS = ("rand", "zeros")


class VarAttention(nn.Module):
    """Multi-head attention over groups of patch tokens, with a CLS token that sees and is seen by all.

    Tokens are ``[CLS, frame 0 patches, frame 1 patches, ...]``. ``mode="space"`` groups the patches of one
    frame, ``mode="time"`` the patches at one spatial position across frames.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, initialize: str = "rand") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        if initialize not in TIME_INITS:
            raise ValueError(f"time_init must be one of {TIME_INITS}, got {initialize!r}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if initialize == "zeros":
            # official: qkv = 0 (so the branch outputs proj.bias = 0), proj weight = 1 so that the gradient
            # reaching v is not a 0 * 0 product
            with torch.no_grad():
                self.qkv.weight.zero_()
                if self.qkv.bias is not None:
                    self.qkv.bias.zero_()
                self.proj.weight.fill_(1.0)
                self.proj.bias.zero_()

    def forward(self, x: Tensor, frames: int, mode: str, key_bias: Tensor | None = None) -> Tensor:
        """x [B, 1 + frames * P, D] -> [B, 1 + frames * P, D]. ``key_bias`` [B, 1 + frames * P] is added to
        the attention logits of every query for that key (DemoVLP's ``(mask - 1) * 100`` padding mask)."""
        b, n, d = x.shape
        h = self.num_heads
        p = (n - 1) // frames
        q, k, v = self.qkv(x).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)  # 3 x [B, H, N, hd]
        if key_bias is not None:
            key_bias = key_bias.to(q.dtype)
        cls_bias = None if key_bias is None else key_bias[:, None, None, :]
        cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v, attn_mask=cls_bias)  # CLS sees everything

        if mode == "space":  # [B, H, F, P, hd] -> groups = frames, sequence = positions
            perm, inv = (0, 2, 1, 3, 4), (0, 2, 1, 3, 4)
        elif mode == "time":  # groups = positions, sequence = frames
            perm, inv = (0, 3, 1, 2, 4), (0, 2, 3, 1, 4)
        else:
            raise ValueError(f"mode must be 'space' or 'time', got {mode!r}")

        def grouped(t: Tensor) -> Tensor:  # [B, H, F*P, hd] -> [B, G, H, L, hd]
            return t.reshape(b, h, frames, p, -1).permute(*perm)

        qg = grouped(q[:, :, 1:])
        g, seq = qg.shape[1], qg.shape[3]

        def with_cls(t: Tensor) -> Tensor:  # keys/values of each group, CLS first
            cls = t[:, :, :1].unsqueeze(1).expand(b, g, h, 1, t.shape[-1])
            return torch.cat([cls, grouped(t[:, :, 1:])], dim=3).flatten(0, 1)

        group_bias = None
        if key_bias is not None:  # [B, N] -> [B*G, 1, 1, 1 + L], CLS first as in with_cls
            kb = key_bias[:, 1:].reshape(b, frames, p)
            kb = kb if mode == "space" else kb.transpose(1, 2)
            kb = torch.cat([key_bias[:, None, :1].expand(b, g, 1), kb], dim=2)
            group_bias = kb.flatten(0, 1)[:, None, None, :]
        out = F.scaled_dot_product_attention(
            qg.flatten(0, 1), with_cls(k), with_cls(v), attn_mask=group_bias
        )  # [B*G, H, L, hd]
        out = out.reshape(b, g, h, seq, -1).permute(*inv).reshape(b, h, frames * p, -1)
        out = torch.cat([cls_out, out], dim=2)  # [B, H, N, hd]
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class SpaceTimeBlock(nn.Module):
    """Frozen's block. ``time_attention=False`` (DemoVLP's ObjectTransformer with ``time_module`` unset) drops
    the temporal branch but keeps ``norm3`` as an unused parameter, as the official module does."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path: float,
        time_init: str,
        time_attention: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = VarAttention(dim, num_heads, qkv_bias)
        if time_attention:
            self.timeattn = VarAttention(dim, num_heads, qkv_bias, initialize=time_init)
        self.time_attention = time_attention
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor, frames: int, key_bias: Tensor | None = None) -> Tensor:
        if self.time_attention:
            t = self.timeattn(self.norm3(x), frames, "time", key_bias)
            s = self.attn(self.norm1(x + t), frames, "space", key_bias)
        else:
            s = self.attn(self.norm1(x), frames, "space", key_bias)
        x = x + self.drop_path(s)  # official quirk: t feeds the spatial attention only, not the residual
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VideoPatchEmbed(nn.Module):
    """Conv patchify of every frame: [B, F, C, H, W] -> [B, F * P, D], frame-major."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.img_size, self.patch_size = img_size, patch_size
        self.num_patches = (img_size // patch_size) ** 2  # per frame
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        b, f = x.shape[:2]
        x = self.proj(x.flatten(0, 1))  # [B*F, D, h, w]
        return x.flatten(2).transpose(1, 2).reshape(b, f * self.num_patches, -1)


@ENCODERS.register("space_time_vit")
class SpaceTimeViT(TowerOptions):
    """Video tower of Frozen-in-Time / MILES / RegionLearner. ``width`` is the output dimension.

    ``forward(video [B, T, 3, H, W], video_mask [B, T] | None, patch_hook=None)`` returns an
    :class:`EncoderOutput` with ``tokens`` [B, 1 + T * P, D] (CLS first, then patches frame-major, after the
    final norm), ``pooled`` = CLS, ``grid`` = (T, h, w), ``mask`` = ``video_mask`` expanded to tokens and
    ``hidden`` = the tokens after the last block, before the final norm (where RegionLearner plugs in).
    ``patch_hook`` maps the patch embeddings [B, T * P, D] before CLS and positional embeddings are added
    (e.g. MILES replaces masked patches by a mask token there).
    """

    PRESETS: dict[str, dict[str, Any]] = {
        # CPU tests and the demo
        "tiny": dict(img_size=64, patch_size=16, embed_dim=128, depth=4, num_heads=4, num_frames=4),
        # ViT-B/16 at 224 (Frozen, MILES, RegionLearner): 114,168,576 parameters with 4 frames
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
        freeze: bool = False,
    ) -> None:
        super().__init__()
        if time_init not in TIME_INITS:
            raise ValueError(f"time_init must be one of {TIME_INITS}, got {time_init!r}")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.width = self.embed_dim = embed_dim
        self.num_frames = num_frames
        self.patch_embed = VideoPatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.patches_per_frame = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patches_per_frame + 1, embed_dim))
        self.temporal_embed = nn.Parameter(torch.zeros(1, num_frames, embed_dim))
        dpr = [drop_path_rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]  # linspace
        self.blocks = nn.ModuleList(
            SpaceTimeBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, dpr[i], time_init) for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        if num_frames == 1:  # the official code re-initialises every layer only for image models
            self.apply(self._init_weights)
        self.set_tower_options(freeze, grad_checkpointing)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def checkpoint_prefixes(self, layout: CheckpointLayout) -> LayoutMap | None:
        """Frozen-in-Time's video tower (also MILES', RegionLearner's, OA-Trans-style ViTs): ``video_model.*``."""
        return LayoutMap({"video_model.": ""}) if layout.keys == "frozen" else None

    @property
    def grid_size(self) -> int:
        return self.patch_embed.img_size // self.patch_embed.patch_size

    def _check_video(self, video: Tensor) -> None:
        if video.ndim != 5:
            raise ValueError(f"video must be [B, T, C, H, W], got shape {tuple(video.shape)}")
        t, c, hh, ww = video.shape[1:]
        if t > self.num_frames:
            raise InputShapeError(
                f"the clips have {t} frames but the video encoder has temporal embeddings for {self.num_frames} "
                f"(its num_frames): set data.num_frames (and data.eval_num_frames) to at most {self.num_frames}, or "
                f"build the encoder for more (method.video.num_frames; a released checkpoint's embeddings are "
                f"inflated with --temporal-fix)"
            )
        size = self.patch_embed.img_size
        if (hh, ww) != (size, size) or c != self.patch_embed.proj.in_channels:
            raise InputShapeError(
                f"frames must be {self.patch_embed.proj.in_channels} x {size} x {size} (img_size), got "
                f"{c} x {hh} x {ww}; the positional embedding is not interpolated"
            )

    def embed(self, video: Tensor, patch_hook: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """[B, T, 3, H, W] -> tokens [B, 1 + T * P, D] with positional and temporal embeddings added."""
        self._check_video(video)
        x = self.patch_embed(video)
        if patch_hook is not None:
            x = patch_hook(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        # pos_embed[1:] tiled over frames ([1,2,3] -> [1,2,3,1,2,3,...]) plus temporal_embed repeated within a
        # frame ([a,b] -> [a,a,a,b,b,b]), built for num_frames and truncated to the current token count
        patches = self.pos_embed[:, 1:].repeat(1, self.num_frames, 1)
        patches = patches + self.temporal_embed.repeat_interleave(self.patches_per_frame, dim=1)
        pos = torch.cat([self.pos_embed[:, :1], patches], dim=1)
        return x + pos[:, : x.shape[1]]

    def forward(
        self,
        video: Tensor,
        video_mask: Tensor | None = None,
        patch_hook: Callable[[Tensor], Tensor] | None = None,
    ) -> EncoderOutput:
        b, f = video.shape[:2]
        if video_mask is not None and tuple(video_mask.shape) != (b, f):
            raise ValueError(f"video_mask must be [B, T] = {(b, f)}, got {tuple(video_mask.shape)}")
        x = self.embed(video, patch_hook)
        for blk in self.blocks:
            x = self.run_block(blk, x, f)
        hidden, x = x, self.norm(x)
        mask = None
        if video_mask is not None:
            per_patch = video_mask.bool().repeat_interleave(self.patches_per_frame, dim=1)
            mask = torch.cat([per_patch.new_ones(b, 1), per_patch], dim=1)
        side = self.grid_size
        return EncoderOutput(pooled=x[:, 0], tokens=x, mask=mask, grid=(f, side, side), hidden=hidden)
