"""``region_boxes``: the manifest's ``boxes`` file (the synthetic dataset's ground-truth boxes) at the clip's
sampled frames, moved with its crop and flip: ``region_boxes`` [T, K, 6] (DemoVLP's geometry ``x1 y1 x2 y2 w h``,
normalised) and ``region_mask`` [T, K]. ``K`` is ``data.num_regions``; frames beyond the clip's are zero with a
False mask."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import Tensor

from vtp_bench.data.inputs.base import Input, ItemContext, pad_frames
from vtp_bench.data.manifest import resolve_path
from vtp_bench.data.regions import RegionReadError, synthetic_regions
from vtp_bench.registry import INPUTS


@dataclass
class RegionOptions:
    num_regions: int = 30  # data.num_regions: boxes per frame

    def __post_init__(self) -> None:
        if self.num_regions < 1:
            raise ValueError(f"num_regions must be >= 1, got {self.num_regions}")


def region_options(cls: type[Input], cfg: DictConfig) -> RegionOptions:
    """The region inputs' options are ``data.num_regions`` (and ``data.regions``): keys older than
    ``data.inputs`` that saved runs, checkpoints and published commands use, so they stay where they are."""
    cls.options_elsewhere(cfg, "data.num_regions / data.regions")
    return cls.options_from({"num_regions": cfg.data.num_regions}, "data.num_regions")


def fake_regions(cfg: DictConfig, n: int, generator: torch.Generator, dtype: torch.dtype) -> dict[str, Tensor]:
    """Valid boxes (x1 y1 x2 y2 plus w h) of a batch; every frame keeps at least one real region."""
    shape = (n, cfg.data.num_frames, cfg.data.num_regions)
    xy = torch.rand(*shape, 2, generator=generator, dtype=dtype) * 0.6
    wh = 0.05 + torch.rand(*shape, 2, generator=generator, dtype=dtype) * 0.35
    mask = torch.rand(*shape, generator=generator) > 0.3
    mask[..., 0] = True
    return {"region_boxes": torch.cat([xy, xy + wh, wh], -1), "region_mask": mask}


@INPUTS.register("region_boxes")
class RegionBoxes(Input):
    name = "region_boxes"
    side_files = True  # a file per video beside it (not in shards)
    keys = ("region_boxes", "region_mask")
    needs = frozenset({"video"})  # read at the decoded frames, moved with the crop
    Options = RegionOptions

    @classmethod
    def read_options(cls, cfg: DictConfig) -> RegionOptions:
        return region_options(cls, cfg)

    def load(self, item: ItemContext) -> dict[str, Tensor]:
        row = item.row
        if row.boxes is None:
            raise RegionReadError(f"{item.manifest}: row {row.text_id!r} has no 'boxes' file (the method reads "
                                  f"per-frame boxes; the synthetic dataset ships them)")
        clip = item.clip
        r = synthetic_regions(resolve_path(row.boxes, item.manifest), clip.indices, self.options.num_regions,
                              clip.crop)
        return {"region_boxes": torch.from_numpy(pad_frames(r.boxes, item.num_frames)),
                "region_mask": torch.from_numpy(pad_frames(r.mask, item.num_frames))}

    @classmethod
    def fake(cls, cfg: DictConfig, n: int, generator: torch.Generator, dtype: torch.dtype) -> dict[str, Tensor]:
        return fake_regions(cfg, n, generator, dtype)
