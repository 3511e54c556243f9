"""A light temporal-grounding head trained on a frozen backbone's features (2D-TAN-like), for any method.

The backbone is any vtp_bench method, rebuilt from its checkpoint (``backbone_checkpoint``: its own config and
weights) or, for tests, from a method config at random init (``backbone``). It is frozen: no parameter trains and
it stays in eval mode, so its features are fixed. A training item is a grounding query with its whole video cut into
the grounding task's clips (the ``grounding_clips`` data input: windows of ``eval.grounding.clip_seconds``), so the
head trains on the candidate moments the evaluation scores. The backbone encodes every clip (``encode_video``,
without gradient, ``encode_chunk`` clips per call; with ``cache_features`` once per training video) and the query
(``encode_text``); the head, as 2D-TAN's pool variant (Zhang et al., AAAI 2020; microsoft/2D-TAN):

- clip features (L2-normalised, ``normalize``) -> ``Linear`` + ReLU (2D-TAN's 1x1 ``Conv1d``);
- a 2D map over runs of clips: cell (i, j), i <= j, pools clips i..j (``pool``: max, 2D-TAN's ``SparsePropMaxPool``
  with one dense scale, or mean);
- fusion with the query: ``normalize(Linear(text) * Conv1x1(map))`` over channels, on the valid cells;
- ``map_layers`` same-size ``Conv2d`` of ``map_kernel`` with ReLU, each output scaled by 1 / (number of valid cells
  under the kernel), the valid region growing by the kernel as in 2D-TAN's ``MapConv`` but kept inside the video's
  own C x C square, so a video's scores do not depend on the other videos it is batched (padded) with;
- a 1x1 ``Conv2d`` to one logit per cell.

Loss (``iou_bce``): 2D-TAN's IoU-scaled binary cross-entropy: the target of a cell is the IoU of its moment
(``[start of clip i, end of clip j]``, exactly the candidate the evaluation scores) with the query's moment,
rescaled ``(iou - min_iou) / (max_iou - min_iou)`` and clipped to [0, 1]; the mean over the moments of the batch
(over every rank's with ``loss.gather=global``). ``moment_scores`` returns the head's logits, so ``vtp-bench eval
--task grounding`` ranks moments by them; retrieval and the clip/query encoders are the backbone's.
docs/methods/grounding_head.md lists every deviation from 2D-TAN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vtp_bench.config import choice
from vtp_bench.errors import InputShapeError
from vtp_bench.losses import global_mean
from vtp_bench.methods.base import Embeddings, Method, config_to_kwargs
from vtp_bench.metrics.grounding import moment_iou
from vtp_bench.registry import METHODS

POOLS = ("max", "mean")


@dataclass
class GroundingHeadConfig:
    name: str = "grounding_head"
    # the frozen backbone: a vtp_bench checkpoint of any method (its saved config and weights) ...
    backbone_checkpoint: Optional[str] = None
    # ... or a method config built at random init (tests; a no-pretraining reference), e.g. {name: frozen, ...}
    backbone: dict[str, Any] = field(default_factory=dict)
    feature_dim: Optional[int] = None  # the backbone's embedding size; null: read from one forward of its text side
    encode_chunk: int = 64  # clips per backbone call: a long video is encoded in chunks, never in one batch
    # reuse a training video's clip features after its first encoding (by video_id), as 2D-TAN trains on features
    # extracted once: fixed features from the first decoding (its frames and crop) and a step that costs the head only
    cache_features: bool = False
    normalize: bool = True  # L2-normalise clip and query features (2D-TAN's DATASET.NORMALIZE)
    hidden: int = 512  # 2D-TAN Charades: HIDDEN_SIZE 512
    pool: str = choice("max", POOLS)  # a run's feature: max (2D-TAN pool variant) | mean of its clips
    map_layers: int = 8  # 2D-TAN Charades: 8 conv layers of kernel 5 (ActivityNet: 4 of kernel 9)
    map_kernel: int = 5
    min_iou: float = 0.5  # 2D-TAN Charades / ActivityNet: MIN_IOU 0.5, MAX_IOU 1.0 (BIAS 0)
    max_iou: float = 1.0


class FrozenBackbone(nn.Module):
    """The backbone method, frozen: no parameter trains and it stays in eval mode (fixed features, no dropout).
    ``freeze`` marks it as a tower frozen on purpose, as an encoder's ``freeze`` does."""

    freeze = True

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "FrozenBackbone":
        return super().train(False)


def build_backbone(cfg: Any) -> tuple[Method, tuple[int, int] | None]:
    """The backbone method and, when it comes from a checkpoint, the (frames, image size) of its clips."""
    if cfg.backbone_checkpoint and cfg.backbone:
        raise ValueError("method.backbone_checkpoint and method.backbone are both set; give one (a checkpoint "
                         "brings its own config)")
    if cfg.backbone_checkpoint:
        from vtp_bench.evaluate import module_from_checkpoint

        if not Path(cfg.backbone_checkpoint).expanduser().is_file():  # also read when a head checkpoint is rebuilt
            raise FileNotFoundError(
                f"method.backbone_checkpoint={cfg.backbone_checkpoint} does not exist: train the backbone first (the "
                "synth default is the demo's LocVTP run: vtp-bench train locvtp_synth run.version=demo) or name its "
                "checkpoint; a grounding_head checkpoint rebuilds its backbone from this file before loading its "
                "own weights, so a moved backbone file is given again with method.backbone_checkpoint=<new path>")
        module = module_from_checkpoint(cfg.backbone_checkpoint, source="vtp_bench")
        data = module.cfg.data
        return module.method, (int(data.eval_num_frames or data.num_frames), int(data.img_size))
    if not cfg.backbone:
        raise ValueError("method.backbone_checkpoint is not set: give the frozen backbone's vtp_bench checkpoint, "
                         "e.g. method.backbone_checkpoint=runs/locvtp_synth/version_0/checkpoints/last.ckpt")
    from vtp_bench.config import config_from_dict
    from vtp_bench.lit import build_method

    backbone = config_from_dict({"name": "grounding_backbone", "method": config_to_kwargs(cfg.backbone)})
    return build_method(backbone), None


def run_features(x: Tensor, pool: str) -> Tensor:
    """[B, C, H] clip features -> [B, H, C, C]: cell (i, j) pools clips i..j (max or mean); cells j < i are 0."""
    b, c, h = x.shape
    out = x.new_zeros(b, c, c, h)
    if pool == "mean":
        i, j = torch.triu_indices(c, c, device=x.device)
        csum = torch.cat([x.new_zeros(b, 1, h), x.cumsum(1)], dim=1)
        out[:, i, j] = (csum[:, j + 1] - csum[:, i]) / (j - i + 1).to(x.dtype)[:, None]
    elif pool == "max":
        run = x
        for d in range(c):  # runs of d + 1 clips: the max of the run one clip shorter and the next clip
            if d:
                run = torch.maximum(run[:, :-1], x[:, d:])
            k = torch.arange(c - d, device=x.device)
            out[:, k, k + d] = run
    else:
        raise ValueError(f"method.pool must be one of {POOLS}, got {pool!r}")
    return out.permute(0, 3, 1, 2)


def moment_mask(num_clips: Tensor, c: int) -> tuple[Tensor, Tensor]:
    """[B] clip counts -> the moments (i <= j < n) and each video's C x C square (i, j < n), both [B, 1, c, c]."""
    k = torch.arange(c, device=num_clips.device)
    inside = k[None, :] < num_clips[:, None]  # [B, c]
    square = inside[:, :, None] & inside[:, None, :]
    return (square & (k[:, None] <= k[None, :]))[:, None], square[:, None]


class MomentMap(nn.Module):
    """2D-TAN on frozen features: [B, C, Dv] clips and [B, Dt] queries -> [B, C, C] logits (cell (i, j) = clips
    i..j). ``clips`` may have one row for B queries of the same video (evaluation): it is broadcast."""

    def __init__(self, clip_dim: int, text_dim: int, hidden: int, layers: int, kernel: int, pool: str) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"method.map_kernel must be odd (same-size convolutions), got {kernel}")
        if pool not in POOLS:
            raise ValueError(f"method.pool must be one of {POOLS}, got {pool!r}")
        self.pool, self.kernel = pool, kernel
        self.clip_proj = nn.Linear(clip_dim, hidden)  # 2D-TAN FrameAvgPool's Conv1d(in, hidden, 1) + ReLU
        self.text_proj = nn.Linear(text_dim, hidden)  # 2D-TAN BaseFusion.tex_linear
        self.map_proj = nn.Conv2d(hidden, hidden, 1)  # 2D-TAN BaseFusion.vis_conv
        self.convs = nn.ModuleList(nn.Conv2d(hidden, hidden, kernel, padding=kernel // 2) for _ in range(layers))
        self.pred = nn.Conv2d(hidden, 1, 1)

    def forward(self, clips: Tensor, num_clips: Tensor, text: Tensor) -> Tensor:
        c = clips.shape[1]
        moments, square = moment_mask(num_clips, c)
        grid = self.map_proj(run_features(F.relu(self.clip_proj(clips)), self.pool))  # [B or 1, H, C, C]
        h = F.normalize(self.text_proj(text)[:, :, None, None] * grid, dim=1) * moments
        valid, ones = moments, h.new_ones(1, 1, self.kernel, self.kernel)
        for conv in self.convs:
            h = F.relu(conv(h))
            count = F.conv2d(valid.to(h.dtype), ones, padding=self.kernel // 2).round()  # valid cells under the kernel
            valid = (count > 0) & square
            h = h * torch.where(valid, 1.0 / count.clamp_min(1), torch.zeros_like(count))
        return self.pred(h)[:, 0]


def iou_targets(windows: Tensor, moment: Tensor, min_iou: float, max_iou: float) -> Tensor:
    """[B, C, 2] clip windows and [B, 2] moments (seconds) -> [B, C, C] targets: the IoU of cell (i, j)'s moment
    ``[windows[i, 0], windows[j, 1]]`` with the query's, rescaled to [0, 1] between ``min_iou`` and ``max_iou``."""
    b, c, _ = windows.shape
    cells = torch.stack([windows[:, :, None, 0].expand(b, c, c), windows[:, None, :, 1].expand(b, c, c)], dim=-1)
    iou = moment_iou(cells.double(), moment.double()[:, None, None, :])
    return ((iou - min_iou) / (max_iou - min_iou)).clamp(0.0, 1.0)


def scaled_iou_bce(logits: Tensor, targets: Tensor, moments: Tensor, gather: str) -> Tensor:
    """2D-TAN's ``bce_rescale_loss`` on logits: binary cross-entropy of sigmoid(logit) against the target, mean
    over the moments (cells with ``moments`` True); with ``gather=global`` the mean over every rank's moments, so
    DDP's average of the ranks' values is the single-process mean of the global batch."""
    bce = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    m = moments.to(bce.dtype)
    return global_mean((bce * m).sum(), m.sum(), gather)


@METHODS.register("grounding_head")
class GroundingHead(Method):
    Config = GroundingHeadConfig

    def __init__(self, cfg: Any, loss_gather: str = "global") -> None:
        super().__init__(cfg, loss_gather)
        if not 0.0 <= cfg.min_iou < cfg.max_iou:
            raise ValueError(f"method.min_iou < method.max_iou needed, got {cfg.min_iou} and {cfg.max_iou}")
        if cfg.encode_chunk < 1:
            raise ValueError("method.encode_chunk must be >= 1")
        method, self.backbone_clip = build_backbone(cfg)
        reads = set(method.data_inputs(method.cfg)) - {"video", "frame_times"}
        if reads:
            raise ValueError(f"the backbone ({method.cfg.name}) reads {sorted(reads)} per clip, which the grounding "
                             "clips do not carry; use a backbone that reads the clip only")
        self.backbone = FrozenBackbone(method)
        dim = cfg.feature_dim
        if dim is None:  # a dual encoder's pooled video and text embeddings share one space: its size
            with torch.no_grad():
                dim = method.encode_text({"text": ["a"]}).pooled.shape[-1]
        self.head = MomentMap(dim, dim, cfg.hidden, cfg.map_layers, cfg.map_kernel, cfg.pool)
        self._feature_cache: dict[str, Tensor] = {}  # video_id -> [clips, D] (cache_features; not saved)
        stray = [n for n, p in self.named_parameters() if p.requires_grad and not n.startswith("head.")]
        if stray:  # the backbone stays frozen: only the head trains
            raise RuntimeError(f"grounding_head: parameters outside the head would train: {stray[:3]}")

    @classmethod
    def data_inputs(cls, cfg: Any) -> frozenset[str]:
        """Training items: every grounding clip of the query's video; evaluation clips: the clip (per_clip)."""
        return frozenset({"video", "grounding_clips"})

    # --- the backbone's side, frozen -----------------------------------------------------------------------
    def _check_clip(self, video: Tensor) -> None:
        if self.backbone_clip is None:
            return
        frames, size = self.backbone_clip
        if video.shape[-4] != frames or tuple(video.shape[-2:]) != (size, size):
            raise InputShapeError(f"the backbone was trained on clips of {frames} frames at {size} px, the data gives "
                             f"{video.shape[-4]} frames at {tuple(video.shape[-2:])}; set data.num_frames={frames} "
                             f"data.img_size={size} (and data.eval_num_frames=null)")

    @torch.no_grad()
    def encode_video(self, batch: dict[str, Any]) -> Embeddings:
        self._check_clip(batch["video"])
        return self.backbone.method.encode_video(batch)

    @torch.no_grad()
    def encode_text(self, batch: dict[str, Any]) -> Embeddings:
        return self.backbone.method.encode_text(batch)

    def similarity(self, text: Embeddings, video: Embeddings) -> Tensor:
        """Retrieval is the backbone's (so validation and ``eval --task retrieval`` still work)."""
        return self.backbone.method.similarity(text, video)

    @torch.no_grad()
    def clip_features(self, clips: Tensor, clips_mask: Tensor, num_clips: Tensor) -> Tensor:
        """[B, C, T, 3, H, W] padded grounding clips -> [B, C, D] pooled backbone features (0 on padding), encoded
        ``encode_chunk`` clips at a time."""
        self._check_clip(clips)
        b, c = clips.shape[:2]
        real = torch.arange(c, device=clips.device)[None, :] < num_clips[:, None]
        flat, fmask = clips[real], clips_mask[real]
        k = self.cfg.encode_chunk
        feats = torch.cat([self.encode_video({"video": flat[i : i + k], "video_mask": fmask[i : i + k]}).pooled
                           for i in range(0, len(flat), k)])
        out = feats.new_zeros(b, c, feats.shape[-1])
        out[real] = feats
        return out

    def training_clip_features(self, batch: dict[str, Any]) -> Tensor:
        """``clip_features`` of a training batch; with ``cache_features``, each video is encoded once (the first
        time a batch holds it) and its features are reused from then on."""
        clips, mask, num = batch["clips"], batch["clips_mask"], batch["num_clips"]
        if not self.cfg.cache_features or batch.get("video_id") is None:
            return self.clip_features(clips, mask, num)
        names = batch.get("dataset") or [""] * len(batch["video_id"])
        ids = [f"{d}/{v}" for d, v in zip(names, batch["video_id"])]  # two datasets may share a video id
        cache = self._feature_cache
        miss = [b for b, v in enumerate(ids) if v not in cache and ids.index(v) == b]  # each missing video once
        if miss:
            idx = torch.tensor(miss, device=clips.device)
            feats = self.clip_features(clips[idx], mask[idx], num[idx])
            for k, b in enumerate(miss):
                cache[ids[b]] = feats[k, : int(num[b])].detach()
        out = None
        for b, v in enumerate(ids):
            f = cache[v]
            if out is None:
                out = f.new_zeros(len(ids), clips.shape[1], f.shape[-1])
            out[b, : len(f)] = f.to(out.device)
        return out

    # --- the head ------------------------------------------------------------------------------------------
    def _prep(self, x: Tensor) -> Tensor:
        x = x.to(self.head.clip_proj.weight.dtype)
        return F.normalize(x, dim=-1) if self.cfg.normalize else x

    def moment_logits(self, clips: Tensor, num_clips: Tensor, text: Tensor) -> Tensor:
        """[B or 1, C, D] clip features, [B or 1] clip counts, [B, D'] query features -> [B, C, C] logits."""
        return self.head(self._prep(clips), num_clips, self._prep(text))

    def moment_scores(self, text: Embeddings, clips: Embeddings, spans: Tensor, how: str = "contrast") -> Tensor:
        """The head's logits of the candidate moments (``how`` is the zero-shot score's option: not used)."""
        c = len(clips)
        logits = self.moment_logits(clips.pooled[None], torch.tensor([c], device=spans.device), text.pooled)
        return logits[:, spans[:, 0], spans[:, 1]]

    def losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        cfg = self.cfg
        num_clips = batch["num_clips"]
        feats = self.training_clip_features(batch)
        text = self.encode_text({"text": batch["text"]}).pooled
        logits = self.moment_logits(feats, num_clips, text)
        targets = iou_targets(batch["clip_windows"], batch["timestamps"], cfg.min_iou, cfg.max_iou)
        moments, _ = moment_mask(num_clips, logits.shape[-1])
        return {"iou_bce": scaled_iou_bce(logits, targets, moments[:, 0], self.loss_gather)}
