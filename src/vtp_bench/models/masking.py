"""Patch masks for masked visual modeling (MILES): which patch positions of a [T, h, w] grid are hidden.

- ``block``: BEiT-style blockwise masking. Rectangles of random area (at least ``min_block`` patches) and aspect
  ratio (log-uniform in [0.3, 1/0.3]) are added until the target count is reached; a rectangle that would
  overshoot is redrawn (10 tries), and whatever is still missing at the end is filled with single random
  patches, so every frame hides exactly ``round(ratio * h * w)`` patches.
- ``random``: that many patches drawn uniformly.
- ``same_across_frames`` (default): one 2-D mask repeated in every frame (a tube, as the MILES figure draws
  it); otherwise each frame draws its own.

Each video's mask comes from its own generator, seeded by (seed, step, video id): the mask of a video does not
depend on which rank or which position of the batch it landed in, so masked training on two processes with half
batches is the training of one process on the whole batch, and a resumed run draws the same masks.
"""

from __future__ import annotations

import math
import zlib
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

MASK_TYPES = ("block", "random")


def num_masked(ratio: float, patches: int) -> int:
    """Masked patches per frame: ``round(ratio * patches)``."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {ratio}")
    return int(round(ratio * patches))


def _block_mask(rng: np.random.Generator, h: int, w: int, target: int, min_block: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    count = 0
    while count < target:
        left = target - count
        added = 0
        for _ in range(10):
            lo = min(min_block, left)
            area = rng.uniform(lo, left) if left > lo else float(left)
            aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
            bh = int(round(math.sqrt(area * aspect)))
            bw = int(round(math.sqrt(area / aspect)))
            if not (1 <= bh <= h and 1 <= bw <= w):
                continue
            top = int(rng.integers(0, h - bh + 1))
            lft = int(rng.integers(0, w - bw + 1))
            new = bh * bw - int(mask[top:top + bh, lft:lft + bw].sum())
            if 0 < new <= left:
                mask[top:top + bh, lft:lft + bw] = True
                added = new
                break
        if added == 0:
            break
        count += added
    if count < target:  # top up with single patches: the ratio is exact
        free = np.flatnonzero(~mask.ravel())
        mask.ravel()[rng.choice(free, size=target - count, replace=False)] = True
    return mask


def frame_mask(rng: np.random.Generator, h: int, w: int, ratio: float, kind: str = "block",
               min_block: int = 16) -> np.ndarray:
    """One frame's [h, w] bool mask with exactly ``num_masked(ratio, h * w)`` True entries."""
    if kind not in MASK_TYPES:
        raise ValueError(f"mask type must be one of {MASK_TYPES}, got {kind!r}")
    target = num_masked(ratio, h * w)
    if kind == "random":
        mask = np.zeros(h * w, dtype=bool)
        mask[rng.choice(h * w, size=target, replace=False)] = True
        return mask.reshape(h, w)
    return _block_mask(rng, h, w, target, max(1, min_block))


def video_seed(seed: int, step: int, video_id: str) -> list[int]:
    """The generator seed of one video's mask: stable across processes and Python runs (no ``hash()``)."""
    return [int(seed), int(step), zlib.crc32(str(video_id).encode("utf-8"))]


def make_masks(video_ids: Sequence[str], grid: tuple[int, int, int], ratio: float, kind: str = "block",
               same_across_frames: bool = True, min_block: int = 16, seed: int = 0, step: int = 0,
               device: torch.device | str | None = None) -> Tensor:
    """[B, T * h * w] bool masks (frame-major, the order of the space-time ViT's patch tokens), True = masked."""
    t, h, w = grid
    out = []
    for vid in video_ids:
        rng = np.random.default_rng(video_seed(seed, step, vid))
        if same_across_frames:
            frames = np.broadcast_to(frame_mask(rng, h, w, ratio, kind, min_block), (t, h, w))
        else:
            frames = np.stack([frame_mask(rng, h, w, ratio, kind, min_block) for _ in range(t)])
        out.append(torch.from_numpy(np.array(frames, dtype=bool).reshape(-1)))
    return torch.stack(out).to(device)
