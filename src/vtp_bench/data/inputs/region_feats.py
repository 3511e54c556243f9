"""``region_feats``: detector region features in the official bottom-up-attention layout (``data/regions.py``),
found through ``data.regions[<dataset>]``, a path template with ``{video_id}``, ``{stem}`` and ``{split}``: a
folder of ``0.npz ... n-1.npz`` per video, frames sampled over the extracted files as video frames are, or one
``.npz`` (an image: one frame). ``region_feats`` [T, K, 2048], ``region_boxes`` [T, K, 6], ``region_mask`` [T, K];
no pixels are decoded unless the method also reads ``video``. It stands in for ``region_boxes``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig
from torch import Tensor

from vtp_bench.data.inputs import InputError
from vtp_bench.data.inputs.base import Input, ItemContext, dataset_entry, pad_frames, row_path
from vtp_bench.data.inputs.region_boxes import RegionOptions, fake_regions, region_options
from vtp_bench.data.regions import FEATURE_DIM, Regions, read_region_file, read_regions, region_file_count
from vtp_bench.data.video import sample_indices
from vtp_bench.registry import INPUTS


@dataclass
class RegionFeatsOptions(RegionOptions):
    template: Optional[str] = None  # the dataset's entry of data.regions


@INPUTS.register("region_feats")
class RegionFeats(Input):
    name = "region_feats"
    side_files = True  # a file per video beside it (not in shards)
    keys = ("region_feats", "region_boxes", "region_mask")
    replaces = frozenset({"region_boxes"})  # the boxes come with the features
    Options = RegionFeatsOptions

    @classmethod
    def read_options(cls, cfg: DictConfig) -> RegionOptions:
        return region_options(cls, cfg)

    @classmethod
    def configure(cls, cfg: DictConfig, dataset: str, name: str | None = None) -> "RegionFeats":
        """With the dataset's ``data.regions`` entry (by ``name``, what a path dataset is called, or as given)."""
        template = dataset_entry(cfg.data.regions, dataset, name)
        if template is None:
            shown = name or dataset
            raise InputError(
                f"method {cfg.method.name!r} reads detector region features, and data.regions has no entry for "
                f"dataset {shown!r}: set data.regions.{shown}=/path/to/features/{{video_id}} (a folder of "
                f"0.npz, 1.npz, ... per video; fields {{video_id}} {{stem}} {{split}})")
        return cls(RegionFeatsOptions(cls.read_options(cfg).num_regions, str(template)))

    def load(self, item: ItemContext) -> dict[str, Tensor]:
        """Raises RegionReadError on a missing or damaged file (the item is skipped)."""
        if self.options.template is None:
            raise InputError("input 'region_feats' has no path template (data.regions.<dataset>)")
        path = row_path(self.options.template, item.row, "data.regions")
        r = self._features(path, item)
        out = {"region_boxes": r.boxes, "region_mask": r.mask, "region_feats": r.feats}
        return {k: torch.from_numpy(pad_frames(v, item.num_frames)) for k, v in out.items()}

    def _features(self, path: Path, item: ItemContext) -> Regions:
        """A folder of extracted frames (sampled like video frames), or one ``.npz`` (an image: one frame)."""
        k = self.options.num_regions
        if path.suffix == ".npz":
            feats, geometry, mask = read_region_file(path, k)
            return Regions(feats[None], geometry[None], mask[None])
        n = region_file_count(path)
        return read_regions(path, sample_indices(n, item.num_frames, item.sampling, item.rng), k)

    @classmethod
    def fake(cls, cfg: DictConfig, n: int, generator: torch.Generator, dtype: torch.dtype) -> dict[str, Tensor]:
        out = fake_regions(cfg, n, generator, dtype)
        shape = (n, cfg.data.num_frames, cfg.data.num_regions, FEATURE_DIM)
        return {**out, "region_feats": torch.randn(*shape, generator=generator, dtype=dtype)}
