"""Per-item inputs beyond the decoded clip, declared by the method that needs them.

A method says what it reads with ``Method.data_inputs(method_cfg)`` (default ``{"video"}``); the DataModule
asks the method class (no model is built) and loads only that:

- ``video``: the decoded clip, ``video`` [T, 3, H, W] and ``video_mask`` [T];
- ``region_boxes``: the manifest's ``boxes`` file (the synthetic dataset's ground-truth boxes) at the sampled
  frames, moved with the crop and flip of the clip: ``region_boxes`` [T, K, 6] (DemoVLP's geometry) and
  ``region_mask`` [T, K]; needs ``video`` (the frames and crop come from it);
- ``frame_times``: each sampled frame's time in seconds from the video's start (``index / fps``), ``frame_times``
  [T] float32, padded frames repeating the last real time; needs ``video`` (LocVTP's offsets between clips);
- ``region_feats``: detector region features in the official bottom-up-attention layout, found through
  ``data.regions[<dataset>]`` (a path template), frames sampled over the extracted files:
  ``region_feats`` [T, K, 2048], ``region_boxes`` [T, K, 6], ``region_mask`` [T, K]. No pixels are decoded
  unless ``video`` is also asked for;
- ``grounding_clips`` (training items of a grounding manifest; needs ``video``): instead of the row's clip, the
  row's whole video cut into the grounding task's windows (``clip_windows`` at ``eval.grounding_clip_seconds``),
  each decoded as a clip, with the row's moment: ``clips`` [C, T, 3, H, W], ``clips_mask`` [C, T], ``clip_windows``
  [C, 2] and ``timestamps`` [2] (seconds, float64), ``duration`` [] and ``num_clips`` []. ``C`` varies by video:
  ``collate`` pads the ``VARIABLE_LENGTH`` keys. Evaluation clips are still decoded one by one as ``video``
  (``ItemInputs.per_clip``).

``K`` is ``data.num_regions``. Frames beyond the ones available are zero-padded with a False mask, as the clip.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from vtp_bench.data.manifest import ManifestError, ManifestRow, resolve_path
from vtp_bench.data.regions import (
    RegionReadError,
    Regions,
    read_region_file,
    read_regions,
    region_file_count,
    synthetic_regions,
)
from vtp_bench.data.transforms import Crop
from vtp_bench.data.video import sample_indices

VIDEO, REGION_BOXES, REGION_FEATS, FRAME_TIMES = "video", "region_boxes", "region_feats", "frame_times"
GROUNDING_CLIPS = "grounding_clips"
KNOWN_INPUTS = (VIDEO, REGION_BOXES, REGION_FEATS, FRAME_TIMES, GROUNDING_CLIPS)
VARIABLE_LENGTH = ("clips", "clips_mask", "clip_windows")  # item tensors whose first dim (clips) varies by video


def clip_windows(duration: float, seconds: float) -> list[tuple[float, float]]:
    """A video cut for grounding: [k s, min((k + 1) s, duration)) for k = 0 .. ceil(duration / s) - 1."""
    n = max(1, math.ceil(duration / seconds - 1e-9))
    return [(k * seconds, min((k + 1) * seconds, duration)) for k in range(n)]


class InputError(ValueError):
    """A method asks for inputs the data side cannot provide with this config."""


def method_inputs(cfg: DictConfig) -> frozenset[str]:
    """What the configured method reads, from its class (``Method.data_inputs``), checked."""
    from vtp_bench.registry import METHODS

    names = frozenset(METHODS.get(cfg.method.name).data_inputs(cfg.method))
    unknown = sorted(names - set(KNOWN_INPUTS))
    if unknown:
        raise InputError(f"method {cfg.method.name!r} asks for inputs {unknown}; the data side knows {KNOWN_INPUTS}")
    if REGION_BOXES in names and VIDEO not in names:
        raise InputError(f"method {cfg.method.name!r}: 'region_boxes' are read at the decoded frames, so it needs "
                         f"'video' too")
    if FRAME_TIMES in names and VIDEO not in names:
        raise InputError(f"method {cfg.method.name!r}: 'frame_times' are the decoded frames' times, so it needs "
                         f"'video' too")
    if GROUNDING_CLIPS in names and (VIDEO not in names or names & {REGION_BOXES, REGION_FEATS}):
        raise InputError(f"method {cfg.method.name!r}: 'grounding_clips' are decoded clips, so it needs 'video' "
                         f"and reads no region inputs")
    if not names:
        raise InputError(f"method {cfg.method.name!r} declares no inputs")
    return names


@dataclass(frozen=True)
class ItemInputs:
    """What a dataset loads per item. ``region_template`` (``region_feats`` only) is the dataset's entry of
    ``data.regions``: a folder of ``0.npz ... n-1.npz`` per video, or one ``.npz`` (an image), with the fields
    ``{video_id}``, ``{stem}`` (the manifest's video path without its extension) and ``{split}``."""

    names: frozenset[str] = frozenset({VIDEO})
    num_regions: int = 30
    region_template: str | None = None
    clip_seconds: float = 1.0  # grounding_clips: the windows' length and stride (eval.grounding_clip_seconds)

    @property
    def video(self) -> bool:
        return VIDEO in self.names

    def per_clip(self) -> "ItemInputs":
        """What one evaluation clip loads: training-only inputs (``grounding_clips``) are left out."""
        return replace(self, names=self.names - {GROUNDING_CLIPS}) if GROUNDING_CLIPS in self.names else self

    def check_rows(self, rows: list[ManifestRow], manifest: Path) -> None:
        """``grounding_clips`` trains on timed queries: every row needs its moment."""
        if GROUNDING_CLIPS in self.names:
            bad = [r.text_id for r in rows if r.start is None or r.end is None]
            if bad:
                raise ManifestError(f"{manifest}: {len(bad)} rows (e.g. {bad[0]!r}) lack start/end; a grounding "
                                    "head trains on each query's moment (a grounding manifest: data convert "
                                    "charades_sta / didemo_grounding / activitynet_grounding, or the synthetic "
                                    "grounding_train split)")

    @classmethod
    def for_dataset(cls, cfg: DictConfig, dataset: str, name: str | None = None) -> "ItemInputs":
        """``dataset`` as given (a registered name or a path); ``name``: what a path dataset is called (its folder
        or stem, ``--name``), the key ``data.regions`` uses for it."""
        names = method_inputs(cfg)
        template = None
        if REGION_FEATS in names:
            regions = cfg.data.regions or {}
            key = next((k for k in (name, dataset) if k is not None and k in regions), None)
            if key is None:
                shown = name or dataset
                raise InputError(
                    f"method {cfg.method.name!r} reads detector region features, and data.regions has no entry for "
                    f"dataset {shown!r}: set data.regions.{shown}=/path/to/features/{{video_id}} (a folder of "
                    f"0.npz, 1.npz, ... per video; fields {{video_id}} {{stem}} {{split}})")
            template = str(regions[key])
        return cls(names, int(cfg.data.num_regions), template, float(cfg.eval.grounding_clip_seconds))

    def region_path(self, row: ManifestRow) -> Path:
        assert self.region_template is not None
        try:
            return Path(self.region_template.format(video_id=row.video_id, stem=str(Path(row.path).with_suffix("")),
                                                    split=row.split))
        except (KeyError, IndexError) as e:
            raise InputError(f"data.regions template {self.region_template!r}: unknown field {e}; use "
                             f"{{video_id}}, {{stem}} or {{split}}") from None

    def load(self, row: ManifestRow, manifest: Path, num_frames: int, sampling: str, rng: random.Random,
             frame_indices: list[int] | None = None, crop: Crop | None = None) -> dict[str, Any]:
        """The extra tensors of one item (``video`` itself is decoded by the dataset). Raises RegionReadError
        on a missing or damaged file, which the dataset turns into a skipped item."""
        if REGION_FEATS in self.names:
            r = self._features(self.region_path(row), num_frames, sampling, rng)
        elif REGION_BOXES in self.names:
            if row.boxes is None:
                raise RegionReadError(f"{manifest}: row {row.text_id!r} has no 'boxes' file (the method reads "
                                      f"per-frame boxes; the synthetic dataset ships them)")
            assert frame_indices is not None
            r = synthetic_regions(resolve_path(row.boxes, manifest), frame_indices, self.num_regions, crop)
        else:
            return {}
        out = {"region_boxes": _pad_frames(r.boxes, num_frames), "region_mask": _pad_frames(r.mask, num_frames)}
        if REGION_FEATS in self.names:
            out["region_feats"] = _pad_frames(r.feats, num_frames)
        return {k: torch.from_numpy(v) for k, v in out.items()}

    def _features(self, path: Path, num_frames: int, sampling: str, rng: random.Random) -> Regions:
        """A folder of extracted frames (sampled like video frames), or one ``.npz`` (an image: one frame)."""
        if path.suffix == ".npz":
            feats, geometry, mask = read_region_file(path, self.num_regions)
            return Regions(feats[None], geometry[None], mask[None])
        n = region_file_count(path)
        return read_regions(path, sample_indices(n, num_frames, sampling, rng), self.num_regions)


def _pad_frames(x: np.ndarray, num_frames: int) -> np.ndarray:
    """Zero frames (mask False) after the last real one, as the clip is padded."""
    if len(x) >= num_frames:
        return x
    return np.concatenate([x, np.zeros((num_frames - len(x), *x.shape[1:]), x.dtype)])
