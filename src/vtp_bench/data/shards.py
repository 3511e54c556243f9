"""Training from WebDataset tar shards (``data.format=webdataset``): few large sequential reads instead of millions
of small files. Shards come from ``vtp-bench data shard`` (``data/shard_write.py``) or from ``video2dataset``.

Where the shards are (:func:`locate_shards`): ``<data.root>/<name>/shards/<split>/`` for a dataset name; for a
path, the folder itself when it holds shards, else ``<manifest dir>/shards/<manifest stem>/``. ``index.json``
gives each shard's sample count; a folder without one (video2dataset's output) is counted once by reading the
tar headers. Reading uses the standard library's ``tarfile`` rather than webdataset's stream iterator: a range
that starts inside a shard seeks past the members before it instead of reading them.

How an epoch is cut (every number below is a function of (seed, epoch, rank, world, workers) only):

1. The steps: ``MixedBatchSampler``'s schedule over the datasets' sample counts, so every rank takes
   ``floor(N / (world * batch))`` steps of a single dataset (the shortest one's count times the number of
   datasets under ``round_robin``), and every rank reads the same dataset at the same step.
2. The samples: per dataset and epoch, the shard order is a permutation seeded by (seed, epoch); the samples in
   that order form one sequence; rank r takes the contiguous range ``[r * n * B, (r + 1) * n * B)`` of it (n:
   its steps of that dataset), and inside it each *lane* (one per DataLoader worker) a contiguous sub-range,
   as many batches as the lane has steps (lane l takes the steps ``k % lanes == l``). Each sample of the
   epoch's first ``world * n * B`` is read once by one rank; the rest wait for a later epoch's order
   (as ``drop_last``). Reads are sequential; a range that starts inside a shard seeks past the members before.
3. The order inside a lane: a shuffle buffer of ``data.shuffle_buffer`` raw samples (bytes, not decoded),
   seeded by (seed, epoch, rank, lane), then cut into batches of B. So the shuffle is approximate (the shard
   order is random, the sample order random within a window) as in open_clip, but deterministic.
4. Decoding: the project's decoder on the in-memory bytes (``video.VideoBytes``), the frame sampling and crop
   seeded by (dataset seed, epoch, the sample's position in the shard set), as files seed by the manifest
   index; an unreadable sample (bad bytes, a truncated shard) becomes a skip marker, dropped by ``collate`` and
   counted by training as with files. A shard that ends before its indexed count pads its range with skip
   markers, so no rank runs short of steps (which would hang DDP).

Evaluation (``data.format=webdataset`` reads the evaluation split from its shards too, ``<manifest dir>/shards/
<split>/``): the tar headers are read once (:func:`video_members`) into video id -> (shard, byte offset, size) of the
video member; a worker then reads a clip's bytes by offset, with no tar parsing. The manifest still gives the set
(texts, ids, windows).

Resume mid-epoch (see docs/data_shards.md): with the same world size and ``data.num_workers``, exact: lane
l's first ``skip`` steps are re-read as raw bytes (not decoded) and dropped, and lane ``(w + skip) % lanes``
runs on worker w, so the DataLoader hands out the remaining steps in the uninterrupted order. With another
world size or worker count the remaining steps of that epoch are cut from the new layout: up to
``skip * B * world`` samples of that epoch may be read twice or not at all; later epochs are exact again.
"""

from __future__ import annotations

import json
import random
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from vtp_bench.data.catalog import DataNotFoundError, is_path
from vtp_bench.data.dataset import DecodeOptions, collate, load_item
from vtp_bench.data.formats.base import ResumableLoader
from vtp_bench.data.inputs import ItemInputs
from vtp_bench.data.manifest import COLUMNS, ManifestError, ManifestRow
from vtp_bench.data.regions import RegionReadError
from vtp_bench.data.samplers import EpochPosition, MixedBatchSampler
from vtp_bench.data.shard_write import INDEX, default_shard_dir
from vtp_bench.data.transforms import VideoTransform
from vtp_bench.data.video import VideoBytes, VideoReadError

# what a sample's media member may be called (video2dataset: mp4 / webm; img2dataset: jpg)
MEDIA_EXTS = ("mp4", "webm", "mkv", "mov", "avi", "m4v", "jpg", "jpeg", "png", "webp", "gif", "bmp")


class ShardError(ValueError):
    """A shard folder that cannot be used as it is; the message names the file and the fix."""


@dataclass(frozen=True)
class ShardSet:
    """A dataset's shards (in name order) and their sample counts."""

    name: str
    dir: Path
    shards: tuple[Path, ...]
    counts: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def offsets(self) -> list[int]:
        return [sum(self.counts[:i]) for i in range(len(self.counts))]


def locate_shards(name: str, root: str | Path, split: str) -> tuple[str, Path]:
    """A training dataset's name in the logs and its shard folder (see the module notes)."""
    if is_path(name):
        p = Path(name)
        if p.is_dir() and ((p / INDEX).is_file() or any(p.glob("*.tar"))):
            return p.resolve().name, p
        if p.is_dir():
            p = p / f"{split}.jsonl"
        return p.stem if p.suffix == ".jsonl" else p.name, default_shard_dir(p)
    return name, Path(root) / name / "shards" / split


def load_shard_set(name: str, folder: Path) -> ShardSet:
    """The shards of a folder: from ``index.json``, or by counting the samples of every ``*.tar``."""
    folder = Path(folder)
    index = folder / INDEX
    if index.is_file():
        try:
            entries = json.loads(index.read_text())["shards"]
            shards = tuple(folder / e["name"] for e in entries)
            counts = tuple(int(e["samples"]) for e in entries)
        except (ValueError, KeyError, TypeError) as e:
            raise ShardError(f"{index}: not a shard index ({e}); write it again with `vtp-bench data shard`") from None
        absent = [s for s in shards if not s.is_file()]
        if absent:
            raise ShardError(f"{index} lists {len(absent)} shard(s) that do not exist (e.g. {absent[0]}); "
                             "copy them there or write the shards again with `vtp-bench data shard`")
    else:
        shards = tuple(sorted(folder.glob("*.tar")))
        if not shards:
            raise DataNotFoundError(
                f"dataset {name!r}: no shards in {folder} (data.format=webdataset reads <data.root>/<name>/shards/"
                f"<split>/); write them with `vtp-bench data shard <manifest> --out {folder}`, or point data.train "
                "at a folder of video2dataset tar files")
        counts = tuple(count_samples(s) for s in shards)
    if sum(counts) == 0:
        raise ShardError(f"{folder}: the shards hold no samples")
    return ShardSet(name, folder, shards, counts)


def _key_ext(member: str) -> tuple[str, str]:
    """``dir/00042.mp4`` -> (``dir/00042``, ``mp4``): the key is everything before the first dot of the file name
    (webdataset's rule, so ``x.seg.json`` belongs to key ``x``)."""
    head, _, tail = member.rpartition("/")
    base, _, ext = tail.partition(".")
    return (f"{head}/{base}" if head else base), ext.lower()


def samples_in(tf: tarfile.TarFile) -> Iterator[tuple[str, list[tarfile.TarInfo]]]:
    """A tar's samples in order, each ``(key, its regular members)``, from the headers alone (webdataset keeps a
    sample's files adjacent); the members seen are let go as it goes, so memory stays flat over a long tar."""
    key, members = None, []
    for m in tf:
        tf.members = []
        if not m.isreg():
            continue
        k = _key_ext(m.name)[0]
        if k != key:
            if key is not None:
                yield key, members
            key, members = k, []
        members.append(m)
    if key is not None:
        yield key, members


def count_samples(shard: Path) -> int:
    """Samples (distinct consecutive keys) of a tar, reading its headers only."""
    with tarfile.open(shard, "r:") as tf:
        return sum(1 for _ in samples_in(tf))


@dataclass
class RawSample:
    """One sample as stored (bytes per extension), or the reason it could not be read."""

    shard: Path
    key: str
    position: int  # in the whole shard set (shards in name order): seeds the frame sampling
    files: dict[str, bytes]
    error: str | None = None


def read_shard(shard: Path, position: int, lo: int, hi: int) -> Iterator[RawSample]:
    """Samples ``lo .. hi - 1`` of a shard (``position``: the shard's first sample in the set); members before
    ``lo`` are skipped by seeking, not read. Always yields ``hi - lo`` items: a shard that is damaged or ends early
    yields error samples for the rest."""
    j, made = -1, 0
    try:
        with tarfile.open(shard, "r:") as tf:
            for j, (key, members) in enumerate(samples_in(tf)):
                if j >= hi:
                    return
                if j >= lo:
                    files = {}
                    for m in members:
                        f = tf.extractfile(m)
                        files[_key_ext(m.name)[1]] = f.read() if f is not None else b""
                    yield RawSample(shard, key, position + j, files)
                    made += 1
        error = f"{shard}: the shard ends after {j + 1} samples, its index says more; write the shards again"
    except (tarfile.TarError, OSError, EOFError) as e:
        error = f"{shard}: unreadable shard ({e}) after sample {j}; write the shards again"
    for i in range(lo + made, hi):
        yield RawSample(shard, f"{shard.name}#{i}", position + i, {}, error)


def read_range(shards: ShardSet, order: list[int], start: int, stop: int) -> Iterator[RawSample]:
    """Positions ``start .. stop - 1`` of the sample sequence that lists the shards in ``order``."""
    offsets = shards.offsets
    pos = 0
    for s in order:
        n = shards.counts[s]
        if pos >= stop:
            return
        if pos + n > start:
            yield from read_shard(shards.shards[s], offsets[s], max(start - pos, 0), min(stop - pos, n))
        pos += n


def shuffled(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """A buffer of ``size`` items: each arriving item replaces a random one, which is yielded (webdataset's and
    open_clip's sample shuffle); ``size <= 1`` keeps the order."""
    if size <= 1:
        yield from items
        return
    buf: list[Any] = []
    for it in items:
        if len(buf) < size:
            buf.append(it)
            continue
        j = rng.randrange(size)
        yield buf[j]
        buf[j] = it
    rng.shuffle(buf)
    yield from buf


def _manifest_row(data: bytes | None) -> ManifestRow | None:
    """The manifest row a sample's ``.json`` holds (``data shard`` stores it), else None (video2dataset's ``.json``
    is download metadata)."""
    try:
        meta = json.loads(data) if data is not None else None
    except ValueError:
        return None
    if isinstance(meta, dict) and all(k in COLUMNS for k in meta) and "video_id" in meta:
        try:
            return ManifestRow.from_dict(meta)
        except ManifestError:
            return None
    return None


def sample_row(raw: RawSample, media_ext: str) -> ManifestRow:
    """The manifest row a sample carries (``data shard`` stores it as ``.json``), else one made from the caption
    (video2dataset: ``.txt``, and a ``.json`` of download metadata)."""
    row = _manifest_row(raw.files.get("json"))
    if row is not None:
        return row
    meta: dict[str, Any] = {}
    if "json" in raw.files:
        try:
            meta = json.loads(raw.files["json"])
        except ValueError:
            meta = {}
    text = raw.files.get("txt", b"").decode("utf-8", errors="replace").strip() or (
        str(meta.get("caption", "")) if isinstance(meta, dict) else "")
    if not text:
        raise VideoReadError(f"{raw.shard}:{raw.key}: the sample has no caption (.txt or a manifest .json)")
    return ManifestRow(raw.key, f"{raw.key}.{media_ext}", text, raw.key, "train", source="webdataset")


@dataclass
class ShardPart:
    """One training dataset read from shards, with how its clips are decoded (as ``VideoTextDataset``)."""

    shards: ShardSet
    num_frames: int
    transform: VideoTransform
    sampling: str
    seed: int
    decode: DecodeOptions | None
    inputs: ItemInputs

    def item(self, raw: RawSample, epoch: int) -> dict[str, Any]:
        """A sample dict (the keys of ``VideoTextDataset``), or a skip marker."""
        if raw.error is not None:
            return {"skipped": raw.key, "error": raw.error}
        ext = next((e for e in MEDIA_EXTS if e in raw.files), None)
        try:
            if ext is None:
                raise VideoReadError(f"{raw.shard}:{raw.key}: the sample holds no video or image "
                                     f"(members: {sorted(raw.files)}; expected one of {', '.join(MEDIA_EXTS)})")
            row = sample_row(raw, ext)
            rng = random.Random((self.seed * 1_000_003 + epoch) * 10_000_019 + raw.position)
            media = VideoBytes(raw.files[ext], f"{raw.shard.name}:{raw.key}.{ext}")
            tensors = load_item(row, raw.shard, media, self.inputs, self.num_frames, self.sampling,  # type: ignore
                                self.transform, rng, self.decode)
        except (VideoReadError, RegionReadError) as e:
            return {"skipped": raw.key, "error": str(e)}
        return {"dataset": self.shards.name, **tensors, "text": row.text, "video_id": row.video_id,
                "text_id": row.text_id, "index": raw.position}


def _identity(batch: Any) -> Any:
    return batch


def check_inputs(names: frozenset[str] | set[str], key: str = "data.format") -> None:
    """Shards hold the videos: a method that also reads files beside them (``Input.side_files``: region features,
    box files) is refused, naming the config key (``key``) to read files instead."""
    from vtp_bench.registry import INPUTS

    unsupported = sorted(n for n in names if INPUTS.get(n).side_files)
    if unsupported:
        raise ShardError(f"{key}=webdataset reads the videos from tar shards; this method also reads "
                         f"{unsupported}, which come from files beside the videos: use {key}=files")


class ShardTrainSet(EpochPosition, IterableDataset):
    """Batches (already collated) of one epoch on one rank; see the module notes for how it is cut."""

    def __init__(self, parts: list[ShardPart], batch_size: int, seed: int = 0, mode: str = "round_robin",
                 shuffle_buffer: int = 256) -> None:
        check_inputs({n for p in parts for n in p.inputs.names})
        self.parts, self.batch_size, self.seed, self.mode = parts, batch_size, seed, mode
        self.shuffle_buffer = shuffle_buffer
        self.rank, self.world, self.lanes = 0, 1, 1
        self.epoch, self.skip_batches = 0, 0

    def configure(self, rank: int, world: int, num_workers: int) -> "ShardTrainSet":
        self.rank, self.world, self.lanes = rank, world, max(1, num_workers)
        self.schedule()  # a dataset without a full batch per rank is an error now, not in a worker
        return self

    def schedule(self) -> list[int]:
        """The dataset of every step of this epoch (``MixedBatchSampler``'s, the same on every rank)."""
        s = MixedBatchSampler([p.shards.total for p in self.parts], self.batch_size, self.rank, self.world,
                              seed=self.seed, mode=self.mode)
        s.set_epoch(self.epoch)
        return s.schedule()

    def __len__(self) -> int:
        # the full epoch, also when resuming: Lightning counts the skipped batches as already done
        return len(self.schedule())

    def shard_order(self, d: int) -> list[int]:
        g = torch.Generator().manual_seed(self.parts[d].seed * 1_000_003 + self.epoch)
        return torch.randperm(len(self.parts[d].shards.counts), generator=g).tolist()

    def lane_range(self, schedule: list[int], d: int, lane: int) -> tuple[int, int]:
        """Dataset d's positions (in this epoch's shard order) that ``lane`` of this rank reads."""
        steps = [k for k, x in enumerate(schedule) if x == d]
        per_lane = [sum(1 for k in steps if k % self.lanes == m) for m in range(self.lanes)]
        start = self.rank * len(steps) * self.batch_size + sum(per_lane[:lane]) * self.batch_size
        return start, start + per_lane[lane] * self.batch_size

    def lane_batches(self, lane: int) -> Iterator[tuple[int, int, list[RawSample]]]:
        """(step, dataset, raw samples) of every step of ``lane`` in this epoch, the skipped ones included."""
        schedule = self.schedule()
        streams = []
        for d, part in enumerate(self.parts):
            start, stop = self.lane_range(schedule, d, lane)
            rng = random.Random(((part.seed * 1_000_003 + self.epoch) * 1009 + self.rank) * 1013 + lane)
            streams.append(shuffled(read_range(part.shards, self.shard_order(d), start, stop),
                                    self.shuffle_buffer, rng))
        for k in range(lane, len(schedule), self.lanes):
            d = schedule[k]
            yield k, d, [next(streams[d]) for _ in range(self.batch_size)]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != self.lanes:
            raise RuntimeError(f"the shard reader was cut for {self.lanes} worker(s) and runs on {workers}")
        lane = (worker + self.skip_batches) % self.lanes  # the remaining steps come out in the uninterrupted order
        for k, d, raws in self.lane_batches(lane):
            if k >= self.skip_batches:  # skipped steps are read as bytes and dropped, never decoded
                yield collate([self.parts[d].item(r, self.epoch) for r in raws])


class ShardLoader(ResumableLoader):
    """A DataLoader over a ``ShardTrainSet``: the dataset yields whole batches (``batch_size=None``). Its own
    generator, as the files' loader: creating an iterator must not draw from the global RNG (that would shift
    dropout masks after a resume). Resumable: ``seek`` sets the epoch and the steps its lanes skip."""

    def __init__(self, dataset: ShardTrainSet, num_workers: int, pin_memory: bool = False) -> None:
        # Lightning warns that an IterableDataset's __len__ may be wrong with several workers; here each worker
        # reads its own lane and the length is the rank's step count, exact
        warnings.filterwarnings("ignore", message=r".*Your `IterableDataset` has `__len__` defined.*")
        super().__init__(dataset, batch_size=None, num_workers=num_workers, collate_fn=_identity,
                         pin_memory=pin_memory, persistent_workers=False,
                         generator=torch.Generator().manual_seed(dataset.seed))

    def seek(self, epoch: int, skip_batches: int) -> None:
        self.dataset.set_epoch(epoch, skip_batches=skip_batches)


def shard_train_set(cfg: Any, transform: VideoTransform, decode: DecodeOptions | None) -> ShardTrainSet:
    """The training datasets of ``cfg.data.train`` read from their shards (seeds as with files)."""
    d = cfg.data
    parts = []
    for i, name in enumerate(d.train):
        label, folder = locate_shards(name, d.root, "train")
        parts.append(ShardPart(load_shard_set(label, folder), d.num_frames, transform, d.train_sampling,
                               cfg.seed + 7919 * i, decode, ItemInputs.for_dataset(cfg, name)))
    return ShardTrainSet(parts, d.batch_size, seed=cfg.seed, mode=d.mix, shuffle_buffer=d.shuffle_buffer)


@dataclass(frozen=True)
class ShardMember:
    """A video stored in a shard: its bytes are ``size`` bytes at ``offset`` of the tar file."""

    shard: Path
    offset: int
    size: int
    name: str  # the member's name in the tar, for messages

    def read(self) -> VideoBytes:
        try:
            with open(self.shard, "rb") as f:
                f.seek(self.offset)
                data = f.read(self.size)
        except OSError as e:
            raise VideoReadError(f"{self.shard}:{self.name}: cannot read the shard ({e})") from None
        if len(data) != self.size:
            raise VideoReadError(f"{self.shard}:{self.name}: the shard ends inside this video; write the shards again")
        return VideoBytes(data, f"{self.shard.name}:{self.name}")


def video_members(shards: ShardSet) -> dict[str, ShardMember]:
    """Video id -> its video member, from the tar headers (the members' data is not read, except each sample's small
    ``.json``, the manifest row that names its video). A video stored more than once (once per caption, as ``data
    shard`` writes a split) maps to its first sample; a sample without a manifest row (video2dataset) is its key."""
    found: dict[str, ShardMember] = {}
    for shard in shards.shards:
        try:
            with tarfile.open(shard, "r:") as tf:
                for key, members in samples_in(tf):
                    by_ext = {_key_ext(m.name)[1]: m for m in reversed(members)}  # the first of an extension
                    media = next((by_ext[e] for e in MEDIA_EXTS if e in by_ext), None)
                    if media is None:
                        continue
                    row = None
                    if "json" in by_ext:
                        f = tf.extractfile(by_ext["json"])
                        row = _manifest_row(f.read() if f is not None else None)
                    found.setdefault(row.video_id if row is not None else key,
                                     ShardMember(shard, media.offset_data, media.size, media.name))
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ShardError(f"{shard}: unreadable shard ({e}); write the shards again with `vtp-bench data shard`"
                             ) from None
    return found


@dataclass(frozen=True)
class ShardVideos:
    """An evaluation clip's video, read from its shard (``EvalClipDataset``'s ``media``): pickles as the index."""

    members: dict[str, ShardMember]

    def __call__(self, video_id: str, path: Path) -> VideoBytes:
        return self.members[video_id].read()
