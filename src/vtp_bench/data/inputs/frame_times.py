"""``frame_times``: each decoded frame's time in seconds from the video's start (``index / fps``), ``frame_times``
[T] float32, padded frames repeating the last real time (NaN: the frame rate is unknown). LocVTP reads it (the
offsets between its clips)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import Tensor

from vtp_bench.data.inputs.base import Input, ItemContext
from vtp_bench.registry import INPUTS


@INPUTS.register("frame_times")
class FrameTimes(Input):
    name = "frame_times"
    keys = ("frame_times",)
    needs = frozenset({"video"})  # the times of the clip's sampled frames

    def load(self, item: ItemContext) -> dict[str, Tensor]:
        return {"frame_times": item.clip.frame_times()}

    @classmethod
    def fake(cls, cfg: DictConfig, n: int, generator: torch.Generator, dtype: torch.dtype) -> dict[str, Tensor]:
        """Frames 0.25 s apart from a start of 0 to 1 s per item (exact in float32)."""
        start = torch.randint(0, 5, (n, 1), generator=generator).float() / 4
        return {"frame_times": start + torch.arange(int(cfg.data.num_frames), dtype=torch.float32) / 4}
