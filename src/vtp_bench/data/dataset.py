"""Manifest rows -> sample dicts (the batch keys the methods read, methods/base.py).

Training reads (video, text) pairs; an unreadable video yields a *skip marker*, never another sample, and
the collate function drops it so the run can count and report it. Evaluation reads each video once
(``RetrievalSet`` keeps texts apart, with ``text_to_video``), and refuses missing videos unless told.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset

from vtp_bench.data.evalset import Clip
from vtp_bench.data.inputs import FRAME_TIMES, GROUNDING_CLIPS, VARIABLE_LENGTH, VIDEO, ItemInputs, clip_windows
from vtp_bench.data.manifest import ManifestError, ManifestRow, read_manifest, resolve_path
from vtp_bench.data.regions import RegionReadError
from vtp_bench.data.transforms import Crop, VideoTransform
from vtp_bench.data.video import VideoReadError, probe_video, read_frames_timed


class MissingVideosError(FileNotFoundError):
    """An evaluation set lists videos that are not on disk."""


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
    """The tensors the method asked for (``Method.data_inputs``): the clip and/or region inputs of one row, in
    the row's window (``start``/``end`` given: that window instead, e.g. a grounding clip); with
    ``grounding_clips``, every grounding window of the row's video instead (``load_grounding_clips``)."""
    if GROUNDING_CLIPS in inputs.names:
        return load_grounding_clips(row, path, inputs.clip_seconds, num_frames, sampling, transform, rng, decode)
    if not inputs.video:  # region features only: no pixels are decoded
        return inputs.load(row, manifest, num_frames, sampling, rng)
    if start is None and end is None:
        start, end = row.start, row.end
    clip = decode_clip(path, num_frames, sampling, transform, rng, start, end, decode)
    extra = inputs.load(row, manifest, num_frames, sampling, rng, clip.indices, clip.crop)
    if FRAME_TIMES in inputs.names:
        extra["frame_times"] = clip.frame_times()
    return {"video": clip.video, "video_mask": clip.mask, **extra}


def load_grounding_clips(row: ManifestRow, path: Path, seconds: float, num_frames: int, sampling: str,
                         transform: VideoTransform, rng: random.Random, decode: DecodeOptions | None) -> dict[str, Any]:
    """A grounding query as a trained head reads it: the row's whole video cut as the grounding task cuts it
    (``clip_windows``), every window decoded as a clip with one crop for all of them (a video's clips are seen
    alike, as the evaluation's centre crop; frames are sampled per clip), and the row's moment. Keys: see
    ``data/inputs.py`` (``grounding_clips``); seconds in float64, as the evaluation's candidate moments."""
    duration = row.duration if row.duration is not None else probe_video(path).duration
    windows = clip_windows(float(duration), seconds)
    crop_seed = rng.random()

    def same_crop(frames: Tensor, _: random.Random) -> Tensor:
        return transform(frames, random.Random(crop_seed))

    clips = [decode_clip(path, num_frames, sampling, same_crop, rng, s, e, decode) for s, e in windows]  # type: ignore
    return {
        "clips": torch.stack([c.video for c in clips]),
        "clips_mask": torch.stack([c.mask for c in clips]),
        "clip_windows": torch.tensor(windows, dtype=torch.float64),
        "timestamps": torch.tensor([row.start, row.end], dtype=torch.float64),
        "duration": torch.tensor(float(duration), dtype=torch.float64),
        "num_clips": torch.tensor(len(windows)),
    }


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


@dataclass
class Videos:
    """The distinct videos of a manifest in first-appearance order, those present on disk (``index``: id ->
    position), with the window of their first row, and the ids of those missing."""

    ids: list[str]
    paths: list[Path]
    windows: list[tuple[float | None, float | None]]
    missing: list[str]
    rows: list[ManifestRow]  # each video's first row (its boxes, region files)

    @property
    def index(self) -> dict[str, int]:
        return {v: i for i, v in enumerate(self.ids)}


def unique_videos(rows: Sequence[ManifestRow], manifest: Path, video_root: Path | None = None,
                  allow_missing: bool = False, max_videos: int | None = None, check_videos: bool = True) -> Videos:
    """Every evaluation set's videos: refuses missing files (naming the count and one path) unless
    ``allow_missing``, which leaves them out and lists them; ``max_videos`` keeps the first N;
    ``check_videos=False`` when the method reads no pixels (region features): files are not looked up."""
    if not rows:
        raise ManifestError(f"{manifest} holds no rows, so there is nothing to score; write or convert the test "
                            "split into it (vtp-bench data synth / convert / from-folder)")
    order: dict[str, int] = {}
    first: list[ManifestRow] = []
    for r in rows:
        if r.video_id not in order:
            if max_videos is not None and len(order) >= max_videos:
                continue
            order[r.video_id] = len(order)
            first.append(r)
    paths = [resolve_path(r.path, manifest, video_root) for r in first]
    missing = {vid for vid, i in order.items() if check_videos and not paths[i].is_file()}
    if missing and not allow_missing:
        example = paths[order[sorted(missing)[0]]]
        raise MissingVideosError(
            f"{manifest}: {len(missing)} of {len(order)} videos are missing (e.g. {example}); "
            "fix the paths / --video-root, or pass --allow-missing to score the rest (the count is recorded)"
        )
    if order and len(missing) == len(order):  # --allow-missing with nothing left: say so, not score nothing
        example = paths[order[sorted(missing)[0]]]
        raise MissingVideosError(
            f"{manifest}: none of its {len(order)} videos exist (e.g. {example}), so nothing readable is left to "
            "score; fix the paths / --video-root / --data-root"
        )
    keep = [order[vid] for vid in order if vid not in missing]
    return Videos([first[i].video_id for i in keep], [paths[i] for i in keep], [(first[i].start, first[i].end)
                  for i in keep], sorted(missing), [first[i] for i in keep])


@dataclass
class RetrievalSet:
    """An evaluation split: unique videos (in first-appearance order) and all texts with their GT video."""

    manifest: Path
    video_ids: list[str]
    video_paths: list[Path]
    texts: list[str]
    text_ids: list[str]
    text_to_video: Tensor
    windows: list[tuple[float | None, float | None]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    rows: list[ManifestRow] = field(default_factory=list)  # each video's first row (its boxes, region files)
    excluded: list[str] = field(default_factory=list)  # videos left out on purpose (a protocol's exclusions)

    @classmethod
    def from_manifest(
        cls, manifest: Path, video_root: Path | None = None, allow_missing: bool = False, max_videos: int | None = None,
        check_videos: bool = True,
    ) -> "RetrievalSet":
        """``check_videos=False`` when the method reads no pixels (region features): files are not looked up."""
        rows = read_manifest(manifest)
        videos = unique_videos(rows, manifest, video_root, allow_missing, max_videos, check_videos)
        kept = [r for r in rows if r.video_id in videos.index]
        return cls(
            manifest=manifest,
            video_ids=videos.ids,
            video_paths=videos.paths,
            texts=[r.text for r in kept],
            text_ids=[r.text_id for r in kept],
            text_to_video=torch.tensor([videos.index[r.video_id] for r in kept], dtype=torch.long),
            windows=videos.windows,
            missing=videos.missing,
            rows=videos.rows,
        )

    @property
    def clips(self) -> list[Clip]:
        """One clip per video: the whole file, or the row's window (a segment of a longer video)."""
        return [Clip(i, p, *w) for i, (p, w) in enumerate(zip(self.video_paths, self.windows))]

    def drop_videos(self, bad: Sequence[int]) -> "RetrievalSet":
        """The same set without the given video indices and their texts (unreadable videos under allow_missing)."""
        bad_set = set(bad)
        keep = [i for i in range(len(self.video_ids)) if i not in bad_set]
        remap = {old: new for new, old in enumerate(keep)}
        sel = [j for j, v in enumerate(self.text_to_video.tolist()) if v in remap]
        return RetrievalSet(
            manifest=self.manifest,
            video_ids=[self.video_ids[i] for i in keep],
            video_paths=[self.video_paths[i] for i in keep],
            texts=[self.texts[j] for j in sel],
            text_ids=[self.text_ids[j] for j in sel],
            text_to_video=torch.tensor([remap[self.text_to_video[j].item()] for j in sel], dtype=torch.long),
            windows=[self.windows[i] for i in keep],
            missing=self.missing + [self.video_ids[i] for i in sorted(bad_set)],
            rows=[self.rows[i] for i in keep] if self.rows else [],
            excluded=self.excluded,
        )


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
    sampled; ``index`` is the clip's position, which VTPModule sorts the gathered embeddings by."""

    def __init__(self, eset: Any, num_frames: int, transform: VideoTransform, sampling: str = "uniform",
                 decode: DecodeOptions | None = None, inputs: ItemInputs | None = None):
        self.clips, self.video_ids, self.manifest = eset.clips, eset.video_ids, eset.manifest
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
            if self.inputs.names == {VIDEO}:  # the rows are not needed (a set built by hand may lack them)
                c = decode_clip(clip.path, self.num_frames, self.sampling, self.transform, rng, clip.start, clip.end,
                                self.decode)
                tensors = {"video": c.video, "video_mask": c.mask}
            else:
                tensors = load_item(self.rows[clip.video], self.manifest, clip.path, self.inputs, self.num_frames,
                                    self.sampling, self.transform, rng, self.decode, clip.start, clip.end)
        except (VideoReadError, RegionReadError) as e:
            return {"skipped": vid, "error": str(e), "index": index}
        return {**tensors, "video_id": vid, "index": index}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, keep strings as lists; skipped items are dropped and listed under ``skipped``. The
    ``VARIABLE_LENGTH`` keys (a video's grounding clips) are right-padded with zeros to the longest item."""
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
        if key in VARIABLE_LENGTH:
            n = max(v.shape[0] for v in vals)
            batch[key] = torch.stack([torch.cat([v, v.new_zeros((n - v.shape[0], *v.shape[1:]))]) for v in vals])
        elif isinstance(vals[0], Tensor):
            batch[key] = torch.stack(vals)
        elif key == "index":
            batch[key] = torch.tensor(vals, dtype=torch.long)
        else:
            batch[key] = vals
    return batch
