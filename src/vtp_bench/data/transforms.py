"""Video transforms on [T, 3, H, W] tensors: the same crop for every frame of a clip (as Frozen-in-Time).

train: RandomResizedCrop(img_size, scale) + optional horizontal flip; eval: centre square crop of the short
side resized to img_size (Frozen's Resize(256) -> CenterCrop(256) -> Resize(224) is this crop). Tensors
are resized with antialias=False, as torchvision 0.8 (the authors' environment) did, for parity of numbers.
"""

from __future__ import annotations

import random

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
    h, w = x.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return _resize(x[..., top : top + s, left : left + s], size)


def random_resized_crop(
    x: Tensor, size: int, scale: tuple[float, float], rng: random.Random, ratio=(3 / 4, 4 / 3)
) -> Tensor:
    """torchvision's RandomResizedCrop sampling rule (10 tries, then a centre crop), one box for all frames."""
    import math

    h, w = x.shape[-2:]
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
            return _resize(x[..., top : top + ch, left : left + cw], size)
    return center_crop_resize(x, size)


class VideoTransform:
    """Callable uint8 [T, H, W, 3] -> normalised float [T, 3, size, size]."""

    def __init__(self, size: int, train: bool, crop_scale=(0.5, 1.0), hflip: bool = False) -> None:
        self.size, self.train, self.crop_scale, self.hflip = size, train, tuple(crop_scale), hflip

    def __call__(self, frames: Tensor, rng: random.Random | None = None) -> Tensor:
        x = to_float_tchw(frames)
        if self.train:
            rng = rng or random.Random()
            x = random_resized_crop(x, self.size, self.crop_scale, rng)  # type: ignore[arg-type]
            if self.hflip and rng.random() < 0.5:
                x = x.flip(-1)
        else:
            x = center_crop_resize(x, self.size)
        return normalize(x)
