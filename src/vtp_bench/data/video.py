"""PyAV video reading: frame-index sampling (``uniform`` / ``rand`` segments, as Frozen-in-Time) and decoding.

Conventions
-----------
* A frame's index is its position in presentation order among the decoded frames of the first video
  stream (0-based). Returned indices are absolute in the video, also when a ``[start, end)`` window is given.
* Frame count (``vlen``): the container's ``stream.frames`` when it is > 0 (mp4/mov store it in the sample
  table), otherwise the number of non-empty packets of the video stream, counted by demuxing (no decoding;
  one packet is one frame for all common video codecs). A header may promise more frames than the file holds
  (an mp4 edit list that drops frames, a truncated mp4 with its index at the front). If the stream then
  ends cleanly before a sampled index, the indices are drawn again over the frames that do exist (a second
  decoding pass); if decoding fails with an error first (a cut inside a packet, damaged data), or a sampled
  frame is flagged corrupt by the decoder, :class:`VideoReadError` is raised. Damage that the decoder
  conceals without flagging it cannot be detected.
* Sampling: the range ``[lo, hi)`` (all frames, or the window) is cut into ``n = min(num_frames, hi - lo)``
  equal integer segments, edges ``lo + (i * L) // n``; ``uniform`` takes each segment's middle frame
  ``(a + b - 1) // 2``, ``rand`` a uniformly random frame of it. So a video shorter than ``num_frames``
  gives ``n < num_frames`` distinct frames (as Frozen's ``min(num_frames, vlen)``): the caller pads and masks.
* ``size``: the frames are scaled inside FFmpeg (swscale, bilinear) so that the short side equals ``size``,
  keeping the aspect ratio; ``None`` keeps the native resolution.
* Decoding (``decode="seek"``, the default) is sparse: the packet index (demuxed, not decoded) gives every
  frame's timestamp and the keyframes; for each sampled frame the decoder seeks to the keyframe at or before
  it and decodes forward, converting only the sampled frames to RGB, and continues without seeking when the
  next sampled frame lies in the GOP being decoded; non-reference frames that are not sampled are not even
  decoded (``skip_frame``). Every decoded frame's timestamp is checked against the
  index; a file whose timestamps make this unreliable (missing or repeated timestamps, an index that
  disagrees with the header's frame count, a seek that lands after its target) is decoded sequentially from
  the first frame instead (``decode="sequential"``), so both paths return identical frames.
* ``threads``: decoder threads per call (1 = single-threaded, the right choice inside DataLoader workers;
  0 = FFmpeg's choice; N > 1 = frame and slice threads).
"""

from __future__ import annotations

import bisect
import io
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from vtp_bench.choices import SAMPLINGS  # noqa: F401 (kept here for the modules that use it)

# "rand_fit": Frozen-in-Time's training sampler as its descendants (MILES, RegionLearner, DemoVLP) run it,
# random.choice(range(start, next - 1)): the last index of each segment is never drawn; a segment of one index
# (where the official code raises and substitutes another sample) gives that index

DECODE_MODES = ("seek", "sequential")

# What PyAV/FFmpeg raise on unreadable input (InvalidDataError etc. subclass FFmpegError; some paths raise
# OSError/ValueError/EOFError or UnicodeDecodeError on odd metadata).
_AV_ERRORS: tuple[type[BaseException], ...] = (av.FFmpegError, OSError, ValueError, EOFError, IndexError)

# FFmpeg's tty demuxer turns any text file (.txt, .ans, ...) into a "video" of rendered characters
_TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})


class VideoReadError(RuntimeError):
    """A video file could not be read (missing, empty, corrupt, truncated, not a video, too few frames)."""


class WindowOutsideVideoError(VideoReadError):
    """A row's [start, end) window lies after the end of its video file."""


# still-image codecs: a CC3M-style image is a 1-frame video, and FFmpeg decodes a truncated JPEG without error
_IMAGE_CODECS = frozenset({"mjpeg", "png", "webp", "bmp", "tiff", "jpeg2000", "gif"})


def _check_image(path: "Path | VideoBytes") -> None:
    """Fully decode an image with PIL, which refuses truncated files (as Frozen-in-Time's CC3M loader does)."""
    from PIL import Image

    try:
        with Image.open(_source(path)) as im:
            im.load()
    except Exception as e:
        raise VideoReadError(f"{path}: damaged or truncated image ({e})") from None


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    duration: float
    width: int
    height: int


# --------------------------------------------------------------------------------------------- sampling
def sample_indices(
    vlen: int,
    num_frames: int,
    sampling: str = "uniform",
    rng: random.Random | None = None,
    lo: int = 0,
    hi: int | None = None,
) -> list[int]:
    """Frame indices in ``[lo, hi)`` (default ``[0, vlen)``): ``min(num_frames, hi - lo)`` segments, one each."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown frame sampling {sampling!r}; choose one of {', '.join(SAMPLINGS)}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    hi = vlen if hi is None else hi
    if not 0 <= lo < hi <= vlen:
        raise ValueError(f"empty or out-of-range frame range [{lo}, {hi}) for a video of {vlen} frames")
    length = hi - lo
    n = min(num_frames, length)
    edges = [lo + (i * length) // n for i in range(n + 1)]  # every segment holds >= 1 frame since n <= length
    if sampling == "uniform":
        return [(a + b - 1) // 2 for a, b in zip(edges[:-1], edges[1:])]
    r = rng if rng is not None else random
    if sampling == "rand_fit":
        return [r.randrange(a, max(a + 1, b - 1)) for a, b in zip(edges[:-1], edges[1:])]
    return [r.randrange(a, b) for a, b in zip(edges[:-1], edges[1:])]


def window_to_frames(start: float | None, end: float | None, fps: float, vlen: int) -> tuple[int, int]:
    """A ``[start, end)`` window in seconds as a frame range ``[lo, hi)`` (frame i shows ``[i/fps, (i+1)/fps)``).

    Frames whose start time lies in the window are kept; a window shorter than a frame keeps the frame
    showing ``start``. Windows are clipped to the video; one entirely after its end keeps the last frame.
    """
    eps = 1e-6
    lo = 0 if start is None else math.ceil(max(start, 0.0) * fps - eps)
    hi = vlen if end is None else math.ceil(end * fps - eps)
    lo = min(max(lo, 0), vlen - 1)
    hi = min(max(hi, lo + 1), vlen)
    return lo, hi


# --------------------------------------------------------------------------------------------- opening
@dataclass(frozen=True)
class VideoBytes:
    """A video held in memory (a sample of a tar shard, ``data/shards.py``), read by the same decoder as a file
    on disk, so its frames are the file's frames; ``name`` (e.g. ``shard-000003.tar:00000042.mp4``) names it in
    errors."""

    data: bytes
    name: str

    def __str__(self) -> str:
        return self.name


def _check_file(path: Path | VideoBytes) -> None:
    if isinstance(path, VideoBytes):
        if not path.data:
            raise VideoReadError(f"{path}: empty file (0 bytes)")
        return
    if not path.exists():
        raise VideoReadError(f"{path}: video file not found")
    if not path.is_file():
        raise VideoReadError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise VideoReadError(f"{path}: empty file (0 bytes)")


def _source(path: "Path | VideoBytes") -> "str | io.BytesIO":
    """What PyAV / PIL open: a file name, or a fresh in-memory file over the bytes."""
    return io.BytesIO(path.data) if isinstance(path, VideoBytes) else str(path)


def open_video(path: "Path | VideoBytes") -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """The container and its first video stream; VideoReadError (naming the file) for anything unreadable."""
    _check_file(path)
    try:
        container = av.open(_source(path), mode="r")
    except _AV_ERRORS as e:
        raise VideoReadError(f"{path}: cannot open as a video container ({e})") from None
    try:
        if not container.streams.video:
            raise VideoReadError(f"{path}: the file holds no video stream")
        stream = container.streams.video[0]
        if stream.codec_context is None or not stream.codec_context.name:
            raise VideoReadError(f"{path}: the video stream has no decodable codec")
        if stream.codec_context.name in _TEXT_CODECS:
            raise VideoReadError(f"{path}: not a video (FFmpeg reads it as text rendered to frames, "
                                 f"codec {stream.codec_context.name!r})")
    except BaseException:
        container.close()
        raise
    return container, stream


def _fps(stream, duration: float | None, vlen: int) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return float(rate)
    if duration and duration > 0 and vlen > 0:
        return vlen / duration
    return 0.0


def _stream_duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _count_frames(path: Path, container, stream) -> int:
    """``stream.frames`` when the container knows it, else the number of non-empty packets (demux only; the
    container is then consumed: reopen it to decode — seeking back is unreliable for image and raw demuxers)."""
    if stream.frames and stream.frames > 0:
        return int(stream.frames)
    count = 0
    try:
        for packet in container.demux(stream):
            if packet.size > 0:
                count += 1
    except _AV_ERRORS as e:
        raise VideoReadError(f"{path}: corrupt stream while counting packets ({e})") from None
    return count


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, frame rate, duration (s) and size of a video's first video stream, without decoding."""
    path = Path(path)
    container, stream = open_video(path)
    try:
        vlen = _count_frames(path, container, stream)
        duration = _stream_duration(container, stream)
        fps = _fps(stream, duration, vlen)
        if duration is None:
            duration = vlen / fps if fps > 0 else 0.0
        width, height = stream.codec_context.width, stream.codec_context.height
    finally:
        container.close()
    if vlen <= 0:
        raise VideoReadError(f"{path}: the video stream has no frames")
    return VideoInfo(num_frames=vlen, fps=fps, duration=duration, width=width, height=height)


# --------------------------------------------------------------------------------------------- decoding
def _out_size(width: int, height: int, size: int | None) -> tuple[int, int]:
    if size is None:
        return width, height
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels or None, got {size}")
    if width <= height:
        return size, max(1, round(height * size / width))
    return max(1, round(width * size / height)), size


class _StreamEnded(Exception):
    """The stream ended cleanly (no decode error) after ``count`` frames, before a sampled index."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.count = count


class _ClipBuffer:
    """The output of one read: the sampled frame indices (sorted, may repeat) -> RGB, scaled, one uint8 buffer.
    Both decode paths put their frames here, so they check and convert frames the same way."""

    def __init__(self, path: Path, indices: Sequence[int], out_w: int, out_h: int) -> None:
        self.path, self.out_w, self.out_h = path, out_w, out_h
        self.out = np.empty((len(indices), out_h, out_w, 3), dtype=np.uint8)
        self.slots: dict[int, list[int]] = {}
        for slot, idx in enumerate(indices):
            self.slots.setdefault(idx, []).append(slot)
        self.reformatter = VideoReformatter()  # one per read: keeps its swscale context across frames (~3x faster)

    def put(self, index: int, frame) -> None:
        if frame.is_corrupt:
            raise VideoReadError(f"{self.path}: frame {index} is damaged (the decoder flags it corrupt); the file "
                                 f"is corrupt")
        rgb = self.reformatter.reformat(frame, width=self.out_w, height=self.out_h, format="rgb24").to_ndarray()
        for s in self.slots[index]:
            self.out[s] = rgb


def _decode_sequential(path: Path, container, stream, indices: Sequence[int], out_w: int, out_h: int
                       ) -> np.ndarray:
    """Decode from the start, keeping the frames at ``indices`` (sorted, may repeat), into one uint8 buffer.

    Raises VideoReadError on a decode error before the last index, or on a sampled frame flagged corrupt;
    _StreamEnded when the stream ends cleanly before the last index.
    """
    buf = _ClipBuffer(path, indices, out_w, out_h)
    last = max(buf.slots)
    seen = -1
    try:
        for frame in container.decode(stream):
            seen += 1
            if seen in buf.slots:
                buf.put(seen, frame)
            if seen >= last:
                break
    except _AV_ERRORS as e:
        if seen < last:
            raise VideoReadError(f"{path}: decoding failed after {seen + 1} frames, before frame {last} was "
                                 f"reached; the file is corrupt or truncated ({e})") from None
    if seen < last:
        raise _StreamEnded(seen + 1)
    return buf.out


@dataclass(frozen=True)
class _PacketIndex:
    """Frame i (presentation order) has timestamp ``pts[i]``; ``keyframes`` are frame indices, ascending."""

    pts: list[int]
    keyframes: list[int]

    def keyframe_before(self, i: int) -> int:
        return self.keyframes[bisect.bisect_right(self.keyframes, i) - 1]


def _packet_index(container, stream) -> _PacketIndex | None:
    """Demux (no decoding) the video stream into a frame/keyframe index, or None when it cannot be trusted
    for seeking: a demux error, a packet without timestamp, repeated timestamps, a count of displayed frames
    that differs from the header's (an edit list that drops frames), or a first frame that is not a keyframe."""
    stamps: list[tuple[int, bool]] = []
    try:
        for packet in container.demux(stream):
            if packet.size <= 0:
                continue
            if packet.pts is None:
                return None
            if packet.is_discard:  # an edit list drops it: the decoder never outputs it (the count check below
                continue           # then hands such files to the sequential path, as the header disagrees)
            stamps.append((int(packet.pts), bool(packet.is_keyframe)))
    except _AV_ERRORS:
        return None
    if not stamps:
        return None
    stamps.sort()
    pts = [p for p, _ in stamps]
    if len(set(pts)) != len(pts) or (stream.frames and stream.frames != len(pts)) or not stamps[0][1]:
        return None
    return _PacketIndex(pts, [i for i, (_, key) in enumerate(stamps) if key])


class _SeekUnreliable(Exception):
    """A decoded frame's timestamp disagrees with the packet index: decode sequentially instead."""


def _decode_keeping(container, stream, keep_pts: set[int], drain_after: set[int]):
    """Decode from the demuxer's position, packet by packet; the decoder discards the non-reference frames
    (nothing else depends on them) that are not sampled, which H.264 streams with B-frames have plenty of. Once
    every packet of ``drain_after`` (the frames shown up to the last target this pass serves) is in, the decoder
    is drained instead of fed on: it would otherwise hold that target back until it had decoded a later frame
    (B-frame reordering), a whole frame decoded for nothing before each seek (the next seek resets it)."""
    cc = stream.codec_context
    pending = set(drain_after)
    for packet in container.demux(stream):
        cc.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in keep_pts else "NONREF"
        yield from stream.decode(packet)
        pending.discard(packet.pts)
        if not pending:
            cc.skip_frame = "DEFAULT"
            yield from stream.decode(None)
            return
    cc.skip_frame = "DEFAULT"


def _decode_seeking(path: Path, container, stream, index: _PacketIndex, indices: Sequence[int], out_w: int,
                    out_h: int) -> np.ndarray:
    """Seek to the keyframe before each sampled frame and decode forward to it (see the module notes)."""
    buf = _ClipBuffer(path, indices, out_w, out_h)
    position = {p: i for i, p in enumerate(index.pts)}
    keep = {index.pts[i] for i in buf.slots}
    frames = None
    last = -1  # presentation index of the last frame the current decoder pass returned
    targets = sorted(buf.slots)

    def seeks_after(t: int, following: int) -> bool:  # the next target's GOP starts after the frame after t
        return t < index.keyframe_before(following) - 1

    for n, target in enumerate(targets):
        key = index.keyframe_before(target)
        if frames is None or last < key - 1:  # the target's GOP starts after the next frame: jump to it
            container.seek(index.pts[key], stream=stream, backward=True, any_frame=False)
            end = n  # the last target this pass serves: the one before the next seek
            while end + 1 < len(targets) and not seeks_after(targets[end], targets[end + 1]):
                end += 1
            frames = _decode_keeping(container, stream, keep, set(index.pts[key: targets[end] + 1]))
        while last != target:
            frame = next(frames, None)
            last = None if frame is None else position.get(frame.pts)
            if last is None or last > target:
                raise _SeekUnreliable
        buf.put(target, frame)
    return buf.out


def _configure_decoder(stream, threads: int) -> None:
    """Threads, and ``err_detect=explode``: a bitstream error raises instead of being concealed, so a damaged
    frame never comes back as plausible-looking pixels (on either path; the seek path then falls back, and
    the sequential pass raises VideoReadError)."""
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0 = FFmpeg's choice), got {threads}")
    cc = stream.codec_context
    cc.options = {**cc.options, "err_detect": "explode"}
    if threads == 1:
        cc.thread_count = 1
    else:
        cc.thread_type = "AUTO"
        cc.thread_count = threads


def read_frames(
    path: str | os.PathLike,
    num_frames: int,
    sampling: str = "uniform",
    size: int | None = None,
    rng: random.Random | None = None,
    start: float | None = None,
    end: float | None = None,
    decode: str = "seek",
    threads: int = 1,
) -> tuple[torch.Tensor, list[int]]:
    """Sample and decode frames: uint8 ``[T, H, W, 3]`` (RGB) and their absolute frame indices (see
    :func:`read_frames_timed`, which also returns each frame's time)."""
    frames, indices, _ = read_frames_timed(path, num_frames, sampling, size, rng, start, end, decode, threads)
    return frames, indices


def read_frames_timed(
    path: "str | os.PathLike | VideoBytes",
    num_frames: int,
    sampling: str = "uniform",
    size: int | None = None,
    rng: random.Random | None = None,
    start: float | None = None,
    end: float | None = None,
    decode: str = "seek",
    threads: int = 1,
) -> tuple[torch.Tensor, list[int], list[float]]:
    """Sample and decode frames: uint8 ``[T, H, W, 3]`` (RGB) and their absolute frame indices.

    ``T = min(num_frames, number of frames in the range)``; ``start``/``end`` (seconds) restrict sampling to
    that window. ``rand`` draws from ``rng`` (or the global ``random`` module). ``decode`` is ``"seek"``
    (sparse keyframe seeking, verified, with a sequential fallback) or ``"sequential"``; both return the
    same frames. Any unreadable input raises :class:`VideoReadError` naming the file and the reason.

    When the header promises more frames than the stream holds and the stream ends *cleanly* before a
    sampled index (an mp4 edit list that drops frames, a file cut at a packet boundary), the indices are
    drawn again over the frames that exist and the video is decoded a second time; a decoding error
    before a sampled frame raises instead.

    The third value is each sampled frame's time in seconds from the start of the video, ``index / fps``
    (frame i shows ``[i / fps, (i + 1) / fps)``, as in :func:`window_to_frames`); NaN when the frame rate
    is unknown. Methods that need where their frames sit in time (LocVTP's temporal offsets) read it.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown frame sampling {sampling!r}; choose one of {', '.join(SAMPLINGS)}")
    if decode not in DECODE_MODES:
        raise ValueError(f"unknown decode mode {decode!r}; choose one of {', '.join(DECODE_MODES)}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    path = path if isinstance(path, VideoBytes) else Path(path)
    container, stream = open_video(path)

    def reopen() -> None:
        nonlocal container, stream
        container.close()
        container, stream = open_video(path)
        _configure_decoder(stream, threads)

    try:
        _configure_decoder(stream, threads)
        index = _packet_index(container, stream) if decode == "seek" else None
        if index is not None:
            vlen = len(index.pts)
        else:
            if decode == "seek":
                reopen()  # the failed index pass consumed the demuxer
            vlen = _count_frames(path, container, stream)
            if not stream.frames:
                reopen()  # counting demuxed the stream
        if vlen <= 0:
            raise VideoReadError(f"{path}: the video stream has no frames")
        fps = 0.0
        stream_fps = _fps(stream, _stream_duration(container, stream), vlen)
        if start is not None or end is not None:
            fps = stream_fps
            if fps <= 0:
                raise VideoReadError(f"{path}: frame rate unknown, cannot convert the [start, end) window to frames")

        def times(idx: list[int]) -> list[float]:
            return [i / stream_fps if stream_fps > 0 else math.nan for i in idx]
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise VideoReadError(f"{path}: the video stream has no frame size (corrupt header?)")
        out_w, out_h = _out_size(width, height, size)

        if vlen == 1 and stream.codec_context.name in _IMAGE_CODECS and (
                container.format.name == "image2" or container.format.name.endswith("_pipe")):
            _check_image(path)  # an image file (not an MJPEG video): PIL sees truncation FFmpeg conceals

        def plan(n_frames: int) -> list[int]:
            if start is not None and fps > 0 and math.ceil(max(start, 0.0) * fps - 1e-6) >= n_frames:
                raise WindowOutsideVideoError(
                    f"{path}: the window [{start}, {end}) s starts after the video's end ({n_frames / fps:.2f} s, "
                    f"{n_frames} frames); the annotation does not fit this file (a different or shorter download?)")
            lo, hi = (0, n_frames) if fps <= 0 else window_to_frames(start, end, fps, n_frames)
            return sample_indices(n_frames, num_frames, sampling, rng, lo, hi)

        indices = plan(vlen)
        if index is not None:
            try:
                return torch.from_numpy(
                    _decode_seeking(path, container, stream, index, indices, out_w, out_h)), indices, times(indices)
            except (_SeekUnreliable, *_AV_ERRORS):
                reopen()  # verified fallback: the sequential pass decides (frames or a VideoReadError)
        try:
            frames = _decode_sequential(path, container, stream, indices, out_w, out_h)
        except _StreamEnded as short:
            if short.count == 0:
                raise VideoReadError(f"{path}: no frame could be decoded") from None
            reopen()
            indices = plan(short.count)
            try:
                frames = _decode_sequential(path, container, stream, indices, out_w, out_h)
            except _StreamEnded as again:
                raise VideoReadError(f"{path}: the stream ended after {again.count} frames on a second pass, "
                                     f"{short.count} on the first; the file is unstable") from None
    finally:
        container.close()
    return torch.from_numpy(frames), indices, times(indices)


__all__ = [
    "DECODE_MODES",
    "SAMPLINGS",
    "VideoInfo",
    "VideoBytes",
    "VideoReadError",
    "WindowOutsideVideoError",
    "open_video",
    "probe_video",
    "read_frames",
    "read_frames_timed",
    "sample_indices",
    "window_to_frames",
]
