"""Video transforms on [T, 3, H, W] tensors: the same crop for every frame of a clip (as Frozen-in-Time).

train: RandomResizedCrop(img_size, scale) + optional horizontal flip; eval: centre square crop of the short
side resized to img_size (Frozen's Resize(256) -> CenterCrop(256) -> Resize(224) is this crop). Tensors
are resized with antialias=False, as torchvision 0.8 (the authors' environment) did, for parity of numbers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float_tchw(frames: Tensor) -> Tensor:
    """uint8 [T, H, W, 3] -> float [T, 3, H, W] in [0, 1]."""
    return frames.permute(0, 3, 1, 2).float().div_(255.0)


def normalize(x: Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Tensor:
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def _resize(x: Tensor, size: int) -> Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)


def center_crop_resize(x: Tensor, size: int) -> Tensor:
    top, left, s, _ = center_crop_box(*x.shape[-2:])
    return _resize(x[..., top : top + s, left : left + s], size)


@dataclass(frozen=True)
class Crop:
    """The crop (and flip) a transform applied to every frame of a clip, in input pixels: lets a dataset move
    per-frame boxes with the pixels (DemoVLP's RoI-pooling option on the synthetic boxes)."""

    top: int
    left: int
    height: int
    width: int
    in_height: int
    in_width: int
    flip: bool = False

    def boxes(self, xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised ``x1 y1 x2 y2`` boxes of the input frame -> the same boxes in the output frame, clipped
        to it, and whether each still covers some area (a box cropped away entirely is not visible)."""
        b = np.asarray(xyxy, dtype=np.float64)
        x = (b[..., [0, 2]] * self.in_width - self.left) / self.width
        y = (b[..., [1, 3]] * self.in_height - self.top) / self.height
        x, y = np.clip(x, 0.0, 1.0), np.clip(y, 0.0, 1.0)
        if self.flip:
            x = 1.0 - x[..., ::-1]
        out = np.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)
        return out.astype(np.float32), (x[..., 1] > x[..., 0]) & (y[..., 1] > y[..., 0])


def center_crop_box(h: int, w: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the centred square of the short side."""
    s = min(h, w)
    return (h - s) // 2, (w - s) // 2, s, s


def random_resized_crop_box(
    h: int, w: int, scale: tuple[float, float], rng: random.Random, ratio=(3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop sampling rule (10 tries, then a centre crop): (top, left, height, width)."""
    import math

    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = rng.randint(0, h - ch)
            left = rng.randint(0, w - cw)
            return top, left, ch, cw
    return center_crop_box(h, w)


def random_resized_crop(
    x: Tensor, size: int, scale: tuple[float, float], rng: random.Random, ratio=(3 / 4, 4 / 3)
) -> Tensor:
    """One RandomResizedCrop box for all frames."""
    top, left, ch, cw = random_resized_crop_box(x.shape[-2], x.shape[-1], scale, rng, ratio)
    return _resize(x[..., top : top + ch, left : left + cw], size)


class VideoTransform:
    """Callable uint8 [T, H, W, 3] -> normalised float [T, 3, size, size]; ``apply`` also returns the Crop."""

    def __init__(self, size: int, train: bool, crop_scale=(0.5, 1.0), hflip: bool = False) -> None:
        self.size, self.train, self.crop_scale, self.hflip = size, train, tuple(crop_scale), hflip

    def __call__(self, frames: Tensor, rng: random.Random | None = None) -> Tensor:
        return self.apply(frames, rng)[0]

    def apply(self, frames: Tensor, rng: random.Random | None = None) -> tuple[Tensor, Crop]:
        x = to_float_tchw(frames)
        h, w = x.shape[-2:]
        flip = False
        if self.train:
            rng = rng or random.Random()
            top, left, ch, cw = random_resized_crop_box(h, w, self.crop_scale, rng)  # type: ignore[arg-type]
            flip = self.hflip and rng.random() < 0.5
        else:
            top, left, ch, cw = center_crop_box(h, w)
        x = _resize(x[..., top : top + ch, left : left + cw], self.size)
        if flip:
            x = x.flip(-1)
        return normalize(x), Crop(top, left, ch, cw, h, w, flip)
