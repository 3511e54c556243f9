"""``video``: the decoded clip of the item's window, ``video`` [T, 3, H, W] zero-padded and ``video_mask`` [T]."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import Tensor

from vtp_bench.data.inputs.base import Input, ItemContext
from vtp_bench.registry import INPUTS


@INPUTS.register("video")
class Video(Input):
    """The clip every dual encoder reads; other inputs that read the decoded frames need it (``needs``)."""

    name = "video"
    keys = ("video", "video_mask")

    def load(self, item: ItemContext) -> dict[str, Tensor]:
        clip = item.clip
        return {"video": clip.video, "video_mask": clip.mask}

    @classmethod
    def fake(cls, cfg: DictConfig, n: int, generator: torch.Generator, dtype: torch.dtype) -> dict[str, Tensor]:
        d = cfg.data
        return {"video": torch.randn(n, d.num_frames, 3, d.img_size, d.img_size, generator=generator, dtype=dtype),
                "video_mask": torch.ones(n, d.num_frames, dtype=torch.bool)}
