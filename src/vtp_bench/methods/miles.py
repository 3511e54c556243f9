"""MILES (Ge et al., ECCV 2022): Frozen's dual encoder plus masked visual modeling against a snapshot encoder.

The video encoder sees the masked video: ``SpaceTimeViT``'s ``patch_hook`` replaces the patch embeddings of the
masked positions by a learnable mask token (before the positional embeddings are added, as BEiT does). A
snapshot video encoder, a copy of the online one that gets no gradient, sees the unmasked video; its last-layer
patch features at the masked positions are the regression targets ("text-aligned features": the snapshot
evolves with the online encoder, which the contrastive loss aligns with text). The snapshot follows the online
encoder by EMA or by a hard copy every N optimizer steps, after each step (``on_train_batch_end``).

Total loss = NormSoftmax (t2v + v2t, τ = 0.05, as Frozen) + λ · MVM. The MVM pre-training code was never
released (docs/methods/miles.md), so every detail the paper figure does not fix is a config value whose default is
documented in docs/methods/miles.md; the inference path (towers, projections, similarity) is the released one
and loads ``MILES.pth`` strictly (``text_proj`` is renamed to ``txt_proj`` by the loader).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import Tensor, nn

from vtp_bench.config import choice
from vtp_bench.losses import global_mean, norm_softmax_loss
from vtp_bench.methods.base import Reported, t2v
from vtp_bench.methods.frozen import Frozen
from vtp_bench.models.masking import MASK_TYPES, make_masks
from vtp_bench.registry import METHODS

SNAPSHOT_UPDATES = ("ema", "copy")
MVM_LOSSES = ("l2", "l1", "smooth_l1", "cos")
TARGET_NORMS = ("none", "layernorm", "l2")
PREDICTORS = ("none", "linear", "mlp")
CONTRAST_INPUTS = ("masked", "full")


@dataclass
class MilesConfig:
    name: str = "miles"
    # paper size (the released model): ViT-B/16, 4 frames, 224 px; DistilBERT-base; 256-d; tau 0.05
    video: dict[str, Any] = field(
        default_factory=lambda: {"name": "space_time_vit", "preset": "base", "num_frames": 4, "time_init": "zeros"}
    )
    text: dict[str, Any] = field(default_factory=lambda: {"name": "hf_text", "preset": "distilbert-base"})
    embed_dim: int = 256
    temperature: float = 0.05
    # --- masking [UNVERIFIED defaults: the figure shows one block in every frame; BEiT's 40 % blockwise] ---
    mask_ratio: float = 0.4  # masked patches per frame, exactly round(ratio * h * w)
    mask_type: str = choice("block", MASK_TYPES)  # block: BEiT blockwise rectangles | random patches
    mask_same_across_frames: bool = True  # one 2-D mask in every frame (tube), as the paper's figure draws it
    mask_min_block: int = 16  # smallest rectangle, in patches (BEiT's 16 for a 14 x 14 grid)
    mask_seed: int = 0  # masks are drawn from (mask_seed, step, video_id)
    # --- snapshot encoder [UNVERIFIED: the update rule is not in the released material] ---
    snapshot_update: str = choice("ema", SNAPSHOT_UPDATES)  # ema | copy (hard copy every snapshot_every steps)
    snapshot_momentum: float = 0.999  # ema: snapshot = m * snapshot + (1 - m) * online, after every step
    snapshot_every: int = 1000  # copy: optimizer steps between hard copies
    # --- masked visual modeling [UNVERIFIED: loss, normalisation, head and weight] ---
    mvm_loss: str = choice("l2", MVM_LOSSES)  # per masked token: l2 (MSE) | l1 | smooth_l1 | cos (1 - cosine)
    target_norm: str = choice("none", TARGET_NORMS)  # on the snapshot's final-norm tokens: none | layernorm | l2
    predictor: str = choice("none", PREDICTORS)  # head on the online tokens; none = compared directly (figure)
    mvm_weight: float = 1.0  # lambda
    contrast_input: str = choice("masked", CONTRAST_INPUTS)  # the video the contrastive loss sees (figure: masked)


def _predictor(kind: str, width: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(width, width)
    return nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))


@METHODS.register("miles")
class Miles(Frozen):
    """Frozen's towers and projections (so released MILES files load as Frozen files do) plus ``snapshot``
    (the no-gradient copy of ``video_model``), ``mask_token`` and ``predictor``."""

    Config = MilesConfig
    reported = (  # paper Tables 1 and 2 (docs/methods/miles.md), text-to-video
        Reported("msrvtt_1ka", "zero-shot", t2v(26.1, 47.2, 56.9, 7.0), "MILES paper, Table 1", 1000),
        Reported("msrvtt_1ka", "fine-tuned", t2v(37.7, 63.6, 73.8, 3.0), "MILES paper, Table 1", 1000),
        Reported("msvd", "zero-shot", t2v(44.4, 76.2, 87.0, 2.0), "MILES paper, Table 2", 27763),
        Reported("msvd", "fine-tuned", t2v(53.9, 83.5, 90.2, 1.0), "MILES paper, Table 2", 27763),
        Reported("lsmdc", "zero-shot", t2v(11.1, 24.7, 30.6, 50.7), "MILES paper, Table 2", 1000),
        Reported("lsmdc", "fine-tuned", t2v(17.8, 35.6, 44.1, 15.5), "MILES paper, Table 2", 1000),
        Reported("didemo", "zero-shot", t2v(27.2, 50.3, 63.6, 5.0), "MILES paper, Table 2", 1004),
        Reported("didemo", "fine-tuned", t2v(36.6, 63.9, 74.0, 3.0), "MILES paper, Table 2", 1004),
    )

    def __init__(self, cfg: Any, loss_gather: str = "global") -> None:
        super().__init__(cfg, loss_gather)
        if cfg.snapshot_update == "copy" and cfg.snapshot_every < 1:
            raise ValueError(f"method.snapshot_every must be >= 1, got {cfg.snapshot_every}")
        if not 0.0 <= cfg.snapshot_momentum <= 1.0:
            raise ValueError(f"method.snapshot_momentum must be in [0, 1], got {cfg.snapshot_momentum}")
        width = self.video_model.width
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        trunc_normal_(self.mask_token, std=0.02)
        self.predictor = _predictor(cfg.predictor, width)
        if cfg.mvm_weight == 0:  # contrastive only (fine-tuning): parts without a gradient must not train (DDP)
            self.mask_token.requires_grad_(False)
            self.predictor.requires_grad_(False)
        self.snapshot = copy.deepcopy(self.video_model)
        self.snapshot.set_tower_options(freeze=True)  # no gradient, and eval mode: no dropout / drop-path in targets
        # optimizer steps already folded into the snapshot: one update per step, restored with the weights
        self.register_buffer("snapshot_step", torch.zeros((), dtype=torch.long))
        self._stats: dict[str, Tensor] = {}

    # --- snapshot ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sync_snapshot(self) -> None:
        """snapshot := online video encoder (hard copy)."""
        self.snapshot.load_state_dict(self.video_model.state_dict())

    @torch.no_grad()
    def update_snapshot(self, step: int) -> bool:
        """Fold optimizer step ``step`` (1-based count of steps done) into the snapshot; returns whether it
        changed. EMA: ``s <- m s + (1 - m) o`` for every parameter (buffers copied); copy: ``s <- o`` when
        ``step % snapshot_every == 0``. A step already folded in (several batches per step, or a repeated
        call) is skipped."""
        if step <= int(self.snapshot_step):
            return False
        self.snapshot_step.fill_(step)
        if self.cfg.snapshot_update == "copy":
            if step % self.cfg.snapshot_every:
                return False
            self.sync_snapshot()
            return True
        m = float(self.cfg.snapshot_momentum)
        online = dict(self.video_model.named_parameters())
        for name, s in self.snapshot.named_parameters():
            s.mul_(m).add_(online[name].detach().to(s.dtype), alpha=1.0 - m)
        online_buffers = dict(self.video_model.named_buffers())
        for name, b in self.snapshot.named_buffers():
            b.copy_(online_buffers[name])
        return True

    def on_train_batch_end(self, step: int) -> None:
        self.update_snapshot(int(step))

    def after_official_load(self, loaded: list[str]) -> list[str]:
        """Called by ``load_official``: no released file holds the snapshot, the mask token or the predictor. The
        snapshot starts as a copy of the loaded video encoder; the others keep their initialisation."""
        if not any(k.startswith("video_model.") for k in loaded) or any(k.startswith("snapshot.") for k in loaded):
            return []  # nothing to copy, or a vtp_bench checkpoint that holds its own snapshot
        self.sync_snapshot()
        self.snapshot_step.zero_()
        new = ["mask_token"] + (["predictor"] if self.cfg.predictor != "none" else [])
        return ["miles: snapshot.* initialised as a copy of the loaded video_model (no released file holds it); "
                f"{', '.join(new)} initialised at random"]

    # --- training -------------------------------------------------------------------------------------------
    def masks(self, batch: dict[str, Any]) -> Tensor:
        """[B, T * h * w] bool, True = masked, for this batch's videos at the current step."""
        video = batch["video"]
        side = self.video_model.grid_size
        ids = batch.get("video_id") or [f"#{i}" for i in range(video.shape[0])]
        c = self.cfg
        return make_masks(ids, (video.shape[1], side, side), c.mask_ratio, c.mask_type, c.mask_same_across_frames,
                          c.mask_min_block, c.mask_seed, int(self.snapshot_step), video.device)

    def mask_hook(self, mask: Tensor):
        """The ``patch_hook`` that puts the mask token in place of the masked patch embeddings [B, T * P, D]."""
        def hook(x: Tensor) -> Tensor:
            return torch.where(mask[..., None], self.mask_token.to(x.dtype), x)

        return hook

    def targets(self, video: Tensor, video_mask: Tensor | None) -> Tensor:
        """The snapshot's last-layer patch features of the unmasked video, [B, T * P, D], no gradient."""
        with torch.no_grad():
            t = self.snapshot(video, video_mask).tokens[:, 1:]
            if self.cfg.target_norm == "layernorm":
                t = F.layer_norm(t, t.shape[-1:])
            elif self.cfg.target_norm == "l2":
                t = F.normalize(t, dim=-1)
        return t.detach()

    def mvm_loss(self, pred: Tensor, target: Tensor, where: Tensor) -> Tensor:
        """Mean over the masked positions ``where`` [B, N] of the per-token loss (other positions take no part).

        With ``loss.gather=global`` the mean is over the masked tokens of every rank (each rank's sum divided by
        the global count, times the world size), so DDP's gradient average equals one process on the global
        batch even when ranks hold different numbers of masked tokens."""
        p, t = pred[where].float(), target[where].float()
        kind = self.cfg.mvm_loss
        if kind == "l2":
            per = (p - t).pow(2).mean(-1)
        elif kind == "l1":
            per = (p - t).abs().mean(-1)
        elif kind == "smooth_l1":
            per = F.smooth_l1_loss(p, t, reduction="none").mean(-1)
        else:
            per = 1.0 - F.cosine_similarity(p, t, dim=-1)
        count = torch.tensor(float(per.shape[0]), device=per.device, dtype=per.dtype)
        return global_mean(per.sum(), count, self.loss_gather)

    def losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        if self.cfg.mvm_weight == 0:  # fine-tuning: Frozen's loss, no masking, no snapshot forward
            return super().losses(batch)
        video, video_mask = batch["video"], batch.get("video_mask")
        mask = self.masks(batch)
        out = self.video_model(video, video_mask, patch_hook=self.mask_hook(mask))
        if self.cfg.contrast_input == "masked":
            v = self.vid_proj(out.pooled)
        else:
            v = self.encode_video(batch).pooled
        t = self.encode_text(batch).pooled
        terms = norm_softmax_loss(t, v, self.cfg.temperature, self.loss_gather)
        target = self.targets(video, video_mask)
        where = mask
        if video_mask is not None:  # padded frames hold no video: nothing to reconstruct there
            where = mask & video_mask.bool().repeat_interleave(self.video_model.patches_per_frame, dim=1)
        mvm = self.mvm_loss(self.predictor(out.tokens[:, 1:]), target, where)
        self._stats = {"mask_ratio": mask.float().mean().detach(), "mvm_unweighted": mvm.detach()}
        return {"nce_t2v": terms["t2v"], "nce_v2t": terms["v2t"], "mvm": self.cfg.mvm_weight * mvm}

    def train_stats(self) -> dict[str, Tensor]:
        return self._stats
