"""Manifest rows -> sample dicts (the batch keys the methods read, methods/base.py).

Training reads (video, text) pairs; an unreadable video yields a *skip marker*, never another sample, and
the collate function drops it so the run can count and report it. Evaluation reads each video once
(the evaluation task builds the set: ``tasks/``), and refuses missing videos unless told.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset

from vtp_bench.data.inputs import VIDEO, ItemContext, ItemInputs, variable_length_keys
from vtp_bench.data.manifest import ManifestRow, read_manifest, resolve_path
from vtp_bench.data.regions import RegionReadError
from vtp_bench.data.transforms import Crop, VideoTransform
from vtp_bench.data.video import VideoReadError, read_frames_timed


@dataclass(frozen=True)
class DecodeOptions:
    """How clips are decoded: ``size`` scales the short side inside the decoder (None = native resolution,
    Frozen-in-Time's pipeline); ``threads`` per decode call (1 inside DataLoader workers)."""

    size: int | None = None
    threads: int = 1


@dataclass
class DecodedClip:
    """A decoded clip plus what other per-frame inputs need: the sampled frame indices and the crop."""

    video: Tensor  # [num_frames, 3, H, W], zero-padded
    mask: Tensor  # [num_frames] bool
    indices: list[int]
    crop: Crop | None
    times: list[float] = field(default_factory=list)  # seconds from the video's start of each decoded frame

    def frame_times(self) -> Tensor:
        """[num_frames] float32 seconds; padded frames repeat the last real time (NaN: frame rate unknown)."""
        pad = self.video.shape[0] - len(self.times)
        return torch.tensor(self.times + self.times[-1:] * pad, dtype=torch.float32)


def decode_clip(
    path: Path,
    num_frames: int,
    sampling: str,
    transform: VideoTransform,
    rng: random.Random,
    start: float | None = None,
    end: float | None = None,
    decode: DecodeOptions | None = None,
) -> DecodedClip:
    """Decode + transform one clip; zero-pad to ``num_frames`` (as Frozen-in-Time) with the frame mask."""
    d = decode or DecodeOptions()
    frames, indices, times = read_frames_timed(path, num_frames, sampling=sampling, rng=rng, start=start, end=end,
                                               size=d.size, threads=d.threads)
    if isinstance(transform, VideoTransform):
        clip, crop = transform.apply(frames, rng)
    else:  # any callable (frames, rng) -> clip; its crop is unknown, so boxes are not moved
        clip, crop = transform(frames, rng), None
    n = clip.shape[0]
    mask = torch.zeros(num_frames, dtype=torch.bool)
    mask[:n] = True
    if n < num_frames:
        clip = torch.cat([clip, clip.new_zeros((num_frames - n, *clip.shape[1:]))])
    return DecodedClip(clip, mask, indices, crop, times)


def load_item(
    row: ManifestRow,
    manifest: Path,
    path: Path,
    inputs: ItemInputs,
    num_frames: int,
    sampling: str,
    transform: VideoTransform,
    rng: random.Random,
    decode: DecodeOptions | None,
    start: float | None = None,
    end: float | None = None,
) -> dict[str, Any]:
    """The tensors the method asked for (``Method.data_inputs``) of one row, each from its provider
    (``data/inputs/``), in the row's window (``start``/``end`` given: that window instead, e.g. a grounding clip).
    The clip is decoded once, when an input first reads it: not at all for inputs that read no pixels."""
    if start is None and end is None:
        start, end = row.start, row.end

    def decoder(s: float | None, e: float | None, t: Any) -> DecodedClip:
        return decode_clip(path, num_frames, sampling, t, rng, s, e, decode)

    return inputs.load(ItemContext(row, manifest, path, num_frames, sampling, rng, start, end, decoder, transform))


class VideoTextDataset(Dataset):
    """One item per manifest row (a video-text pair), for training."""

    def __init__(
        self,
        manifest: Path,
        num_frames: int,
        transform: VideoTransform,
        sampling: str = "rand",
        video_root: Path | None = None,
        seed: int = 0,
        decode: DecodeOptions | None = None,
        name: str = "",
        inputs: ItemInputs | None = None,
    ) -> None:
        self.manifest = Path(manifest)
        self.inputs = inputs or ItemInputs()
        self.decode, self.name = decode, name
        self.rows: list[ManifestRow] = read_manifest(self.manifest)
        self.inputs.check_rows(self.rows, self.manifest)
        self.video_root = video_root
        self.num_frames, self.transform, self.sampling, self.seed = num_frames, transform, sampling, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        # the frame sampling and crop of an item depend only on (seed, epoch, index): resumable, worker-agnostic
        rng = random.Random((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
        path = resolve_path(row.path, self.manifest, self.video_root)
        try:
            tensors = load_item(row, self.manifest, path, self.inputs, self.num_frames, self.sampling,
                                self.transform, rng, self.decode)
        except (VideoReadError, RegionReadError) as e:
            return {"skipped": row.video_id, "error": str(e)}
        return {
            "dataset": self.name,
            **tensors,
            "text": row.text,
            "video_id": row.video_id,
            "text_id": row.text_id,
            "index": index,
        }


class MixedDataset(ConcatDataset):
    """Several training datasets end to end (torch's ConcatDataset: global index = offset + local index);
    items say which dataset they come from, and ``MixedBatchSampler`` keeps each batch inside one dataset."""

    @property
    def parts(self) -> list[VideoTextDataset]:
        return self.datasets  # type: ignore[return-value]

    def set_epoch(self, epoch: int) -> None:
        for p in self.parts:
            p.set_epoch(epoch)


class EvalClipDataset(Dataset):
    """Each clip of an evaluation set once (``tasks.base.Clip``: a video, or a window of one), deterministically
    sampled; ``index`` is the clip's position, which VTPModule sorts the gathered embeddings by. ``media``: where a
    clip's video comes from, ``(video id, path) -> Path | VideoBytes`` (a data format's, ``data/formats/``; None:
    the clip's file)."""

    def __init__(self, eset: Any, num_frames: int, transform: VideoTransform, sampling: str = "uniform",
                 decode: DecodeOptions | None = None, inputs: ItemInputs | None = None,
                 media: Callable[[str, Path], Any] | None = None):
        self.clips, self.video_ids, self.manifest = eset.clips, eset.video_ids, eset.manifest
        self.media = media
        self.num_frames, self.transform, self.sampling, self.decode = num_frames, transform, sampling, decode
        self.inputs = (inputs or ItemInputs()).per_clip()  # each clip alone, whatever training items read
        self.rows: list[ManifestRow] = list(getattr(eset, "rows", []))
        if self.inputs.names != {VIDEO} and len(self.rows) != len(self.video_ids):
            raise ValueError("region inputs need each video's manifest row (the evaluation set's ``rows``)")

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip = self.clips[index]
        vid = self.video_ids[clip.video]
        rng = random.Random(index)
        try:
            path = clip.path if self.media is None else self.media(vid, clip.path)
            if self.inputs.names == {VIDEO}:  # the rows are not needed (a set built by hand may lack them)
                c = decode_clip(path, self.num_frames, self.sampling, self.transform, rng, clip.start, clip.end,
                                self.decode)
                tensors = {"video": c.video, "video_mask": c.mask}
            else:
                tensors = load_item(self.rows[clip.video], self.manifest, path, self.inputs, self.num_frames,
                                    self.sampling, self.transform, rng, self.decode, clip.start, clip.end)
        except (VideoReadError, RegionReadError) as e:
            return {"skipped": vid, "error": str(e), "index": index}
        return {**tensors, "video_id": vid, "index": index}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, keep strings as lists; skipped items are dropped and listed under ``skipped``. The keys
    an input calls variable-length (``Input.variable_length``: a video's grounding clips) are right-padded with
    zeros to the longest item."""
    variable = variable_length_keys()
    good = [it for it in items if "skipped" not in it]
    batch: dict[str, Any] = {
        "skipped": [it["skipped"] for it in items if "skipped" in it],
        "skipped_index": [it["index"] for it in items if "skipped" in it and "index" in it],
        "skipped_errors": [it["error"] for it in items if "skipped" in it],
    }
    if not good:
        batch["size"] = 0
        return batch
    batch["size"] = len(good)
    for key in good[0]:
        vals = [it[key] for it in good]
        if key in variable:
            n = max(v.shape[0] for v in vals)
            batch[key] = torch.stack([torch.cat([v, v.new_zeros((n - v.shape[0], *v.shape[1:]))]) for v in vals])
        elif isinstance(vals[0], Tensor):
            batch[key] = torch.stack(vals)
        elif key == "index":
            batch[key] = torch.tensor(vals, dtype=torch.long)
        else:
            batch[key] = vals
    return batch
