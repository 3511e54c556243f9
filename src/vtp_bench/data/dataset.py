"""Manifest rows -> sample dicts (the batch keys of DESIGN.md).

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

from vtp_bench.data.manifest import ManifestRow, read_manifest, resolve_path
from vtp_bench.data.transforms import VideoTransform
from vtp_bench.data.video import VideoReadError, read_frames


class MissingVideosError(FileNotFoundError):
    """An evaluation set lists videos that are not on disk."""


@dataclass(frozen=True)
class DecodeOptions:
    """How clips are decoded: ``size`` scales the short side inside the decoder (None = native resolution,
    Frozen-in-Time's pipeline); ``threads`` per decode call (1 inside DataLoader workers)."""

    size: int | None = None
    threads: int = 1


def load_clip(
    path: Path,
    num_frames: int,
    sampling: str,
    transform: VideoTransform,
    rng: random.Random,
    start: float | None = None,
    end: float | None = None,
    decode: DecodeOptions | None = None,
) -> tuple[Tensor, Tensor]:
    """Decode + transform one clip; zero-pad to ``num_frames`` (as Frozen-in-Time) and return the frame mask."""
    d = decode or DecodeOptions()
    frames, _ = read_frames(path, num_frames, sampling=sampling, rng=rng, start=start, end=end, size=d.size,
                            threads=d.threads)
    clip = transform(frames, rng)
    n = clip.shape[0]
    mask = torch.zeros(num_frames, dtype=torch.bool)
    mask[:n] = True
    if n < num_frames:
        clip = torch.cat([clip, clip.new_zeros((num_frames - n, *clip.shape[1:]))])
    return clip, mask


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
    ) -> None:
        self.manifest = Path(manifest)
        self.decode, self.name = decode, name
        self.rows: list[ManifestRow] = read_manifest(self.manifest)
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
            video, mask = load_clip(path, self.num_frames, self.sampling, self.transform, rng, row.start, row.end,
                                    self.decode)
        except VideoReadError as e:
            return {"skipped": row.video_id, "error": str(e)}
        return {
            "dataset": self.name,
            "video": video,
            "video_mask": mask,
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

    @property
    def index(self) -> dict[str, int]:
        return {v: i for i, v in enumerate(self.ids)}


def unique_videos(rows: Sequence[ManifestRow], manifest: Path, video_root: Path | None = None,
                  allow_missing: bool = False, max_videos: int | None = None) -> Videos:
    """Every evaluation set's videos: refuses missing files (naming the count and one path) unless
    ``allow_missing``, which leaves them out and lists them; ``max_videos`` keeps the first N."""
    order: dict[str, int] = {}
    paths: list[Path] = []
    windows: list[tuple[float | None, float | None]] = []
    for r in rows:
        if r.video_id not in order:
            if max_videos is not None and len(order) >= max_videos:
                continue
            order[r.video_id] = len(order)
            paths.append(resolve_path(r.path, manifest, video_root))
            windows.append((r.start, r.end))
    missing = {vid for vid, i in order.items() if not paths[i].is_file()}
    if missing and not allow_missing:
        example = paths[order[sorted(missing)[0]]]
        raise MissingVideosError(
            f"{manifest}: {len(missing)} of {len(order)} videos are missing (e.g. {example}); "
            "fix the paths / --video-root, or pass --allow-missing to score the rest (the count is recorded)"
        )
    keep = [vid for vid in order if vid not in missing]
    return Videos(keep, [paths[order[v]] for v in keep], [windows[order[v]] for v in keep], sorted(missing))


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

    @classmethod
    def from_manifest(
        cls, manifest: Path, video_root: Path | None = None, allow_missing: bool = False, max_videos: int | None = None
    ) -> "RetrievalSet":
        rows = read_manifest(manifest)
        videos = unique_videos(rows, manifest, video_root, allow_missing, max_videos)
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
        )

    @property
    def clips(self) -> list[Any]:
        """One clip per video: the whole file, or the row's window (a segment of a longer video)."""
        from vtp_bench.tasks.base import Clip

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

    def __init__(self, clips: Sequence[Any], video_ids: Sequence[str], num_frames: int, transform: VideoTransform,
                 sampling: str = "uniform", decode: DecodeOptions | None = None):
        self.clips, self.video_ids = list(clips), list(video_ids)
        self.num_frames, self.transform, self.sampling, self.decode = num_frames, transform, sampling, decode

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip = self.clips[index]
        vid = self.video_ids[clip.video]
        try:
            video, mask = load_clip(clip.path, self.num_frames, self.sampling, self.transform, random.Random(index),
                                    clip.start, clip.end, self.decode)
        except VideoReadError as e:
            return {"skipped": vid, "error": str(e), "index": index}
        return {"video": video, "video_mask": mask, "video_id": vid, "index": index}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, keep strings as lists; skipped items are dropped and listed under ``skipped``."""
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
        if isinstance(vals[0], Tensor):
            batch[key] = torch.stack(vals)
        elif key == "index":
            batch[key] = torch.tensor(vals, dtype=torch.long)
        else:
            batch[key] = vals
    return batch
