"""``grounding_clips``: a grounding query as a trained head reads it (training items only). Instead of the row's
clip, the row's whole video cut as the grounding task cuts it (``clip_windows`` at the task's clip length), every
window decoded as a clip with one crop for all of them (a video's clips are seen alike, as the evaluation's centre
crop; frames are sampled per clip), and the row's moment: ``clips`` [C, T, 3, H, W], ``clips_mask`` [C, T],
``clip_windows`` [C, 2] and ``timestamps`` [2] (seconds, float64, as the evaluation's candidate moments),
``duration`` [] and ``num_clips`` []. ``C`` varies by video: ``collate`` pads the first three. Evaluation clips are
decoded one by one as ``video`` (``per_clip = False``)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from omegaconf import DictConfig
from torch import Tensor

from vtp_bench.data.inputs.base import Input, ItemContext
from vtp_bench.data.manifest import ManifestError, ManifestRow
from vtp_bench.data.video import probe_video
from vtp_bench.registry import INPUTS


def clip_windows(duration: float, seconds: float) -> list[tuple[float, float]]:
    """A video cut for grounding: [k s, min((k + 1) s, duration)) for k = 0 .. ceil(duration / s) - 1."""
    n = max(1, math.ceil(duration / seconds - 1e-9))
    return [(k * seconds, min((k + 1) * seconds, duration)) for k in range(n)]


def grounding_clip_seconds(cfg: Any) -> float:
    """The grounding task's clip length and stride (``eval.grounding.clip_seconds``; a config of earlier versions
    with the flat key is moved there when it loads), the one place the data side reads it."""
    return float(cfg.eval.grounding.clip_seconds)


@dataclass
class GroundingClipsOptions:
    clip_seconds: float = 1.0  # the windows' length and stride

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip_seconds) and self.clip_seconds > 0):
            raise ValueError(f"clip_seconds must be a finite number of seconds > 0, got {self.clip_seconds}")


@INPUTS.register("grounding_clips")
class GroundingClips(Input):
    name = "grounding_clips"
    keys = ("clips", "clips_mask", "clip_windows", "timestamps", "duration", "num_clips")
    variable_length = ("clips", "clips_mask", "clip_windows")
    needs = frozenset({"video"})  # evaluation clips are decoded as the clip
    replaces = frozenset({"video"})  # training items hold the windows instead of the row's clip
    excludes = frozenset({"region_boxes", "region_feats"})
    per_clip = False
    Options = GroundingClipsOptions

    @classmethod
    def read_options(cls, cfg: DictConfig) -> GroundingClipsOptions:
        cls.options_elsewhere(cfg, "the grounding task's clip length (eval.grounding.clip_seconds)")
        return cls.options_from({"clip_seconds": grounding_clip_seconds(cfg)}, "eval.grounding.clip_seconds")

    def check_rows(self, rows: Sequence[ManifestRow], manifest: Path) -> None:
        """A grounding head trains on timed queries: every row needs its moment."""
        bad = [r.text_id for r in rows if r.start is None or r.end is None]
        if bad:
            raise ManifestError(f"{manifest}: {len(bad)} rows (e.g. {bad[0]!r}) lack start/end; a grounding "
                                "head trains on each query's moment (a grounding manifest: data convert "
                                "charades_sta / didemo_grounding / activitynet_grounding, or the synthetic "
                                "grounding_train split)")

    def load(self, item: ItemContext) -> dict[str, Tensor]:
        row = item.row
        duration = row.duration if row.duration is not None else probe_video(item.path).duration
        windows = clip_windows(float(duration), self.options.clip_seconds)
        crop_seed = item.rng.random()

        def same_crop(frames: Tensor, _: random.Random) -> Tensor:
            return item.transform(frames, random.Random(crop_seed))

        clips = [item.decode(s, e, same_crop) for s, e in windows]
        return {
            "clips": torch.stack([c.video for c in clips]),
            "clips_mask": torch.stack([c.mask for c in clips]),
            "clip_windows": torch.tensor(windows, dtype=torch.float64),
            "timestamps": torch.tensor([row.start, row.end], dtype=torch.float64),
            "duration": torch.tensor(float(duration), dtype=torch.float64),
            "num_clips": torch.tensor(len(windows)),
        }

    @classmethod
    def fake(cls, cfg: DictConfig, n: int, generator: torch.Generator, dtype: torch.dtype) -> dict[str, Tensor]:
        """``n`` videos of 1 s clips as ``collate`` pads them: videos of 2 to 4 clips, longer ones later in the
        batch (so two ranks' halves hold different numbers of moments), a random moment each."""
        d = cfg.data
        counts = [2 + 3 * i // n for i in range(n)]
        c = max(counts)
        real = torch.arange(c)[None, :] < torch.tensor(counts)[:, None]  # [n, c]
        clips = torch.randn(n, c, d.num_frames, 3, d.img_size, d.img_size, generator=generator, dtype=dtype)
        windows = torch.stack([torch.arange(c), torch.arange(c) + 1], -1).double()[None].repeat(n, 1, 1)
        start = torch.rand(n, generator=generator, dtype=torch.float64) * (torch.tensor(counts) - 1)
        length = 0.5 + torch.rand(n, generator=generator, dtype=torch.float64)
        return {"clips": clips * real[..., None, None, None, None],
                "clips_mask": real[..., None].repeat(1, 1, d.num_frames), "clip_windows": windows * real[..., None],
                "timestamps": torch.stack([start, start + length], -1),
                "duration": torch.tensor(counts, dtype=torch.float64), "num_clips": torch.tensor(counts)}
