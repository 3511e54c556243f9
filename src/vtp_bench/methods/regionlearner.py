"""RegionLearner (Yan et al., "Video-Text Pre-training with Learned Regions", arXiv 2112.01194; AAAI 2023).

Frozen-in-Time's dual encoder with one module after the last space-time block (docs/methods/regionlearner.md),
numerically as ``showlab/Region_Learner`` HEAD runs it:

1. **Quantization**: every patch token takes the nearest of K codebook vectors (squared distance written as
   ``|z|^2 + |E|^2 - 2 z E^T``, first index on ties); the forward value is the code, the gradient goes straight
   through to the token. In training mode the codebook is an EMA k-means updated *inside* the forward: the
   argmin uses the codebook before the update, the returned codes are looked up after it; counts and sums are
   summed over ranks. The official decay is 0.1 for the whole run (its ramp to 0.99 is never called), so the
   codebook is about the current batch's cluster means; ``ema_schedule="ramp"`` is the paper's intent.
2. **Aggregation**: a 3x3 conv (C -> S) on the quantized h x w map gives S *raw* masks (no softmax: they may be
   negative); region s is the spatial mean of mask_s * features.
3. **Interaction**: one multi-head attention (8 heads, no qkv bias) over the T*S region tokens of a video,
   which *replaces* them (no residual, no norm, no MLP).

The video embedding is ``vid_proj(LN(CLS) + mean LN(regions))`` with the tower's final LayerNorm (HEAD); the
pre-2022-07 code used LN(CLS) only (``pool="cls"``, the regions then train nothing but the codebook). Text side,
projections and NormSoftmax (tau 0.05, both directions summed, gathered over ranks) are Frozen's.

The head's parameter and buffer names are the official module's, and ``checkpoint_prefixes`` tells
``models.checkpoints.load_official`` that a released file's ``video_model.RegionLearner.*`` belong here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vtp_bench.config import choice
from vtp_bench.distributed import rank_world
from vtp_bench.methods.base import Embeddings, Reported, t2v
from vtp_bench.methods.frozen import Frozen
from vtp_bench.models.layouts import CheckpointLayout, LayoutMap
from vtp_bench.registry import METHODS

EMA_SCHEDULES = ("constant", "ramp")
POOLS = ("cls+regions", "cls")
DEAD_COUNT = 1e-3  # a code whose EMA token count fell below this is counted as dead


# ------------------------------------------------------------------------------------------------ the head
class VectorQuantizer(nn.Module):
    """EMA k-means codebook (SOHO's visual dictionary, as RegionLearner's ``Quantizer.VectorQuantizer``).

    Buffers (the official state-dict keys): ``embed`` [K, C] ~ N(0, 1), ``cluster_size`` [K] (EMA token counts),
    ``cluster_sum`` [K] (running total of counts, never read: kept for the key layout), ``embed_avg`` [K, C]
    (EMA of the per-code sums of tokens)."""

    def __init__(self, num_codes: int, dim: int, decay: float = 0.1, eps: float = 1e-5,
                 max_decay: float = 0.99) -> None:
        super().__init__()
        self.num_codes, self.dim = num_codes, dim
        self.decay, self.max_decay, self.eps = decay, max_decay, eps
        self.curr_decay = decay
        self.register_buffer("embed", torch.randn(num_codes, dim))
        self.register_buffer("cluster_size", torch.zeros(num_codes))
        self.register_buffer("cluster_sum", torch.zeros(num_codes))
        self.register_buffer("embed_avg", torch.zeros(num_codes, dim))

    def set_decay_updates(self, num_update: int) -> None:
        """The ramp the official code defines but never calls: decay * updates, capped at ``max_decay``."""
        self.curr_decay = min(self.decay * num_update, self.max_decay)

    @torch.no_grad()
    def nearest(self, z: Tensor) -> Tensor:
        """[M, C] -> code index [M] under the official distance expression (argmin: first index on ties)."""
        e = self.embed
        d = (z ** 2).sum(dim=1, keepdim=True) + (e ** 2).sum(dim=1) - 2 * z @ e.t()
        return d.argmin(dim=1)

    @torch.no_grad()
    def ema_update(self, z: Tensor, idx: Tensor) -> Tensor:
        """One EMA k-means step on tokens ``z`` [M, C] assigned to ``idx`` [M]; every rank must call it (the counts
        and per-code sums are summed over ranks, so every rank ends with the same codebook). Returns the
        global counts [K]."""
        k, g = self.num_codes, self.curr_decay
        counts = torch.bincount(idx, minlength=k).to(z.dtype)
        sums = z.new_zeros(k, z.shape[1]).index_add_(0, idx, z)
        if rank_world()[1] > 1:
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_sum.add_(counts)
        self.cluster_size.mul_(g).add_(counts * (1.0 - g))
        self.embed_avg.mul_(g).add_(sums * (1.0 - g))
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + k * self.eps) * n  # Laplace smoothing
        self.embed.copy_(self.embed_avg / smoothed.unsqueeze(1))
        return counts

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """z [M, C] -> (straight-through codes [M, C], index [M], counts [K] of this forward, global in training)."""
        zd = z.detach().to(self.embed.dtype)
        with torch.autocast(z.device.type, enabled=False):  # assignments and EMA in the codebook's precision
            idx = self.nearest(zd)
            if self.training:
                counts = self.ema_update(zd, idx)
            else:
                counts = torch.bincount(idx, minlength=self.num_codes).to(zd.dtype)
        q = F.embedding(idx, self.embed).to(z.dtype)
        return (q - z).detach() + z, idx, counts


class Aggregation(nn.Module):
    """S raw masks from a 3x3 conv; region s = spatial mean of mask_s * x."""

    def __init__(self, dim: int, num_regions: int) -> None:
        super().__init__()
        self.num_regions = num_regions
        self.spatial_att = nn.Conv2d(dim, num_regions, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [N, C, h, w] -> (regions [N, S, C], masks [N, S, h, w])."""
        masks = self.spatial_att(x)
        regions = torch.einsum("nshw,nchw->nsc", masks, x) / (x.shape[2] * x.shape[3])
        return regions, masks


class MotionExcitation(nn.Module):
    """Optional (off in the main config): softmax over positions of a 3x3 conv of the frame difference, used
    to add ``x * weight`` of the un-quantized tokens to the codes."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ex_proj = nn.Conv2d(dim, 1, kernel_size=3, padding=1)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        """x [b, T, L, C] -> [b, T, L, C]."""
        b, t, n, c = x.shape
        prev = torch.cat([x[:, :1], x[:, :-1]], dim=1)  # delta_0 = 0
        diff = (x - prev).reshape(b * t, n, c).transpose(1, 2).reshape(b * t, c, h, w)
        weight = self.ex_proj(diff).reshape(b, t, n).softmax(dim=-1)
        return x * weight.unsqueeze(-1)


class RegionAttention(nn.Module):
    """``model/helper.py: Attention`` at its defaults: qkv without bias, scale head_dim ** -0.5, proj with bias."""

    def __init__(self, dim: int, num_heads: int = 8) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"region interaction: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class RegionLearnerHead(nn.Module):
    """Quantization -> (Motion_Excitation) -> Aggregation -> Interaction, on the patch tokens of each frame.

    ``forward(tokens [b*T, L, C], frames=T)`` -> ``(regions [b*T, S, C], code_indices [b*T, h, w],
    region_masks [b*T, S, h, w])`` with h = w = sqrt(L). Submodule names are the official ones (hence the
    capitals). ``depth`` > 1 chains that many attention layers (the official code crashes there: it calls an
    ``nn.ModuleList``); ``depth=0`` leaves the regions as aggregated.
    """

    def __init__(self, num_codes: int, dim: int, num_regions: int, depth: int = 1, motion_excitation: bool = False,
                 ema_decay: float = 0.1, eps: float = 1e-5, num_heads: int = 8, max_decay: float = 0.99) -> None:
        super().__init__()
        if depth < 0:
            raise ValueError(f"interaction depth must be >= 0, got {depth}")
        self.num_regions, self.depth = num_regions, depth
        self.Quantization = VectorQuantizer(num_codes, dim, ema_decay, eps, max_decay)
        self.Motion_Excitation = MotionExcitation(dim) if motion_excitation else None
        self.Aggregation = Aggregation(dim, num_regions)
        if depth == 1:  # the official layout for depth 1: Interaction.qkv / Interaction.proj
            self.Interaction: nn.Module | None = RegionAttention(dim, num_heads)
        elif depth > 1:
            self.Interaction = nn.ModuleList(RegionAttention(dim, num_heads) for _ in range(depth))
        else:
            self.Interaction = None
        self.last_counts: Tensor | None = None  # code counts of the last training forward (all ranks)

    def interact(self, r: Tensor) -> Tensor:
        layers = self.Interaction if isinstance(self.Interaction, nn.ModuleList) else [self.Interaction]
        for layer in layers:
            if layer is not None:
                r = layer(r)
        return r

    def forward(self, tokens: Tensor, frames: int = 1) -> tuple[Tensor, Tensor, Tensor]:
        n, length, c = tokens.shape
        h = int(math.sqrt(length))
        w = length // h
        if h * w != length or n % frames:
            raise ValueError(f"RegionLearner needs a square patch grid per frame and b*T rows: got {n} rows of "
                             f"{length} tokens with {frames} frames")
        q, idx, counts = self.Quantization(tokens.reshape(n * length, c))
        if self.training:
            self.last_counts = counts
        if self.Motion_Excitation is not None and frames > 1:
            q = q + self.Motion_Excitation(tokens.reshape(-1, frames, length, c), h, w).reshape(-1, c)
        x = q.reshape(n, length, c).transpose(1, 2).reshape(n, c, h, w)
        regions, masks = self.Aggregation(x)
        s = regions.shape[1]
        regions = self.interact(regions.reshape(-1, frames * s, c)).reshape(n, s, c)
        return regions, idx.reshape(n, h, w), masks

    def codebook_stats(self) -> dict[str, Tensor]:
        """Perplexity and live codes of the last training step's assignments; dead codes by EMA count."""
        if self.last_counts is None:
            return {}
        counts = self.last_counts.float()
        p = counts / counts.sum().clamp_min(1.0)
        entropy = -(p * p.clamp_min(1e-12).log()).sum()
        return {"rl_perplexity": entropy.exp(), "rl_live_codes": (counts > 0).sum().float(),
                "rl_dead_codes": (self.Quantization.cluster_size < DEAD_COUNT).sum().float()}


# ---------------------------------------------------------------------------------------------- the method
@dataclass
class RegionLearnerConfig:
    name: str = "regionlearner"
    # paper size: FiT's ViT-B/16 (ImageNet init), 4-frame model, 224 px; DistilBERT-base; 256-d
    video: dict[str, Any] = field(
        default_factory=lambda: {"name": "space_time_vit", "preset": "base", "num_frames": 4, "time_init": "zeros"}
    )
    text: dict[str, Any] = field(default_factory=lambda: {"name": "hf_text", "preset": "distilbert-base"})
    embed_dim: int = 256
    temperature: float = 0.05
    num_codes: int = 2048  # VQ_num_tokens
    num_regions: int = 8  # AGG_region_num
    interaction_depth: int = 1  # Interaction_depth
    interaction_heads: int = 8
    motion_excitation: bool = False  # Motion_Excitation (only WebVid2M_4f_ME.json turns it on)
    ema_decay: float = 0.1  # what the official code runs for the whole training
    ema_schedule: str = choice("constant", EMA_SCHEDULES)  # ramp: min(ema_decay * update, ema_max_decay)
    ema_max_decay: float = 0.99
    eps: float = 1e-5  # Laplace smoothing of the EMA counts
    pool: str = choice("cls+regions", POOLS)  # cls: the pre-2022-07 code (regions never reach the embedding)


@dataclass
class RegionOutput:
    """What the video side computes before the projection, kept for visualisation."""

    feature: Tensor  # [B, C] LN(CLS) (+ mean LN(regions))
    regions: Tensor  # [B, T, S, C] region tokens after interaction, before the final norm
    codes: Tensor  # [B, T, h, w] code index of every patch
    masks: Tensor  # [B, T, S, h, w] raw region masks


@METHODS.register("regionlearner")
class RegionLearner(Frozen):
    """Frozen's towers, projections and loss; the video side goes through ``RegionLearnerHead``."""

    Config = RegionLearnerConfig
    reported = (Reported("msrvtt_1ka", "fine-tuned", t2v(36.3, 63.9, 72.5, 3.0),
                         "RegionLearner paper table, as quoted by the SimVTP README", 1000),)

    def __init__(self, cfg: Any, loss_gather: str = "global") -> None:
        super().__init__(cfg, loss_gather)
        self.region_learner = RegionLearnerHead(
            cfg.num_codes, self.video_model.width, cfg.num_regions, cfg.interaction_depth, cfg.motion_excitation,
            cfg.ema_decay, cfg.eps, cfg.interaction_heads, cfg.ema_max_decay)
        if cfg.pool == "cls":  # no gradient reaches the head: leave it out of the optimizer (and of DDP's reducer)
            self.region_learner.requires_grad_(False)

    def checkpoint_prefixes(self, layout: CheckpointLayout) -> LayoutMap | None:
        """Released RegionLearner files keep the head under the video tower (``video_model.RegionLearner.*``);
        here it is a sibling. A Frozen file without it leaves the head as built (reported)."""
        found = super().checkpoint_prefixes(layout)
        if layout.keys != "frozen" or found is None:
            return found
        head = "video_model.RegionLearner."
        return LayoutMap({**found.prefixes, head: "region_learner."}, optional=(*found.optional, head))

    def video_regions(self, batch: dict[str, Any]) -> RegionOutput:
        video = batch["video"]
        b, t = video.shape[:2]
        out = self.video_model(video, batch.get("video_mask"))
        if out.hidden is None:
            raise TypeError("regionlearner needs a video tower that returns its pre-norm tokens (space_time_vit)")
        patches = out.hidden[:, 1:]  # after the last block, before the final norm
        tokens = patches.reshape(b * t, patches.shape[1] // t, patches.shape[2])
        regions, codes, masks = self.region_learner(tokens, t)
        s = regions.shape[1]
        feature = out.pooled  # LN(CLS)
        if self.cfg.pool == "cls+regions":
            feature = feature + self.video_model.norm(regions.reshape(b, t * s, -1)).mean(dim=1)
        return RegionOutput(feature, regions.reshape(b, t, s, -1), codes.reshape(b, t, *codes.shape[1:]),
                            masks.reshape(b, t, *masks.shape[1:]))

    def encode_video(self, batch: dict[str, Any]) -> Embeddings:
        return Embeddings(pooled=self.vid_proj(self.video_regions(batch).feature))

    def train_stats(self) -> dict[str, Tensor]:
        return self.region_learner.codebook_stats()

    def on_train_batch_end(self, step: int) -> None:
        if self.cfg.ema_schedule == "ramp":  # the next update is number step + 1 (1-based)
            self.region_learner.Quantization.set_decay_updates(step + 1)
