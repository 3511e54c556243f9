"""Per-item inputs beyond (or instead of) the decoded clip: one registered provider per file of this package.

A method says what it reads with ``Method.data_inputs(method_cfg)`` (default ``{"video"}``); the datasets ask the
method class (no model is built), configure each named provider (``registry.INPUTS``) for the dataset and load
only those, in training and in evaluation; ``collate`` pads the keys a provider calls variable-length, and
``testing.fake_method_inputs`` asks each provider for its fake. The inputs of the package:

- ``video`` (``video.py``): the decoded clip, ``video`` [T, 3, H, W] and ``video_mask`` [T];
- ``region_boxes`` (``region_boxes.py``): the manifest's ``boxes`` file (the synthetic dataset's ground-truth
  boxes) at the sampled frames, moved with the crop and flip of the clip: ``region_boxes`` [T, K, 6] (DemoVLP's
  geometry) and ``region_mask`` [T, K]; needs ``video`` (the frames and crop come from it);
- ``frame_times`` (``frame_times.py``): each sampled frame's time in seconds from the video's start
  (``index / fps``), ``frame_times`` [T] float32, padded frames repeating the last real time; needs ``video``;
- ``region_feats`` (``region_feats.py``): detector region features in the official bottom-up-attention layout,
  found through ``data.regions[<dataset>]`` (a path template), frames sampled over the extracted files:
  ``region_feats`` [T, K, 2048], ``region_boxes`` [T, K, 6], ``region_mask`` [T, K]. No pixels are decoded
  unless ``video`` is also asked for; it stands in for ``region_boxes``;
- ``grounding_clips`` (``grounding_clips.py``; training items of a grounding manifest; needs ``video``): instead
  of the row's clip, the row's whole video cut into the grounding task's windows (``clip_windows``), each decoded
  as a clip, with the row's moment: ``clips`` [C, T, 3, H, W], ``clips_mask`` [C, T], ``clip_windows`` [C, 2] and
  ``timestamps`` [2] (seconds, float64), ``duration`` [] and ``num_clips`` []. ``C`` varies by video (padded by
  ``collate``). Evaluation clips are still decoded one by one as ``video`` (it is training-only).

``K`` is ``data.num_regions``. Frames beyond the ones available are zero-padded with a False mask, as the clip.

**A new input is one file** (here, or a ``VTP_PLUGINS`` file): a subclass of ``base.Input`` registered with
``@INPUTS.register("<name>")``, saying which item keys it writes, which inputs it needs (``video``: it reads the
decoded clip, its frame indices and crop), excludes or stands in for, whether evaluation clips load it, which keys
vary in length, its options (an ``Options`` dataclass read from ``data.inputs.<name>``), ``check_rows``, ``load``
and ``fake``. A method then lists ``"<name>"`` in ``data_inputs``. See ``base.Input`` and README "Adding a
per-item input".

This module imports no torch (``vtp-bench list`` reads the registered names from the sources): the names below are
constants, the rest is imported from ``base`` on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

VIDEO, REGION_BOXES, REGION_FEATS, FRAME_TIMES = "video", "region_boxes", "region_feats", "frame_times"
GROUNDING_CLIPS = "grounding_clips"


class InputError(ValueError):
    """A method asks for inputs the data side cannot provide with this config."""


# name -> the module of this package that defines it (imported on first use: torch)
_LAZY = {name: "base" for name in ("Input", "InputReadError", "ItemContext", "ItemInputs", "NoOptions",
                                   "method_inputs", "check_inputs", "fake_inputs", "variable_length_keys",
                                   "row_path", "dataset_entry", "pad_frames")}
_LAZY.update(clip_windows="grounding_clips", grounding_clip_seconds="grounding_clips")

__all__ = ["VIDEO", "REGION_BOXES", "REGION_FEATS", "FRAME_TIMES", "GROUNDING_CLIPS", "InputError", *_LAZY]

if TYPE_CHECKING:
    from vtp_bench.data.inputs.base import (  # noqa: F401
        Input,
        InputReadError,
        ItemContext,
        ItemInputs,
        NoOptions,
        check_inputs,
        dataset_entry,
        fake_inputs,
        method_inputs,
        pad_frames,
        row_path,
        variable_length_keys,
    )
    from vtp_bench.data.inputs.grounding_clips import clip_windows, grounding_clip_seconds  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
