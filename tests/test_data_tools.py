"""`data check` finds every kind of bad video and writes a cleaned manifest; `data compress` re-encodes with
a short GOP, an fps cap and a short side, resumes, and its files read back through the seeking reader."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest

from helpers.videos import index_of, write_indexed_video
from vtp_bench.cli import main
from vtp_bench.data.check import check_manifest
from vtp_bench.data.compress import compress_manifest
from vtp_bench.data.manifest import ManifestRow, read_manifest, write_manifest
from vtp_bench.data.video import probe_video, read_frames


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    v = root / "videos"
    v.mkdir()
    write_indexed_video(v / "good.mp4", 40)
    write_indexed_video(v / "one_frame.mp4", 1)
    (v / "empty.mp4").write_bytes(b"")
    (v / "notes.mp4").write_text("this is not a video\n" * 50)
    data = (v / "good.mp4").read_bytes()
    (v / "truncated.mp4").write_bytes(data[: len(data) // 3])
    names = ["good", "one_frame", "empty", "notes", "truncated", "absent"]
    rows = [ManifestRow(n, f"videos/{n}.mp4", f"caption of {n}", f"{n}_0", "train", source="test") for n in names]
    rows.append(ManifestRow("good", "videos/good.mp4", "a moment of good", "good_1", "train", start=1.0, end=2.0,
                            source="test"))
    rows.append(ManifestRow("good", "videos/good.mp4", "a moment after the end", "good_2", "train", start=30.0,
                            end=35.0, source="test"))
    write_manifest(root / "train.jsonl", rows)
    return root


def test_check_reports_each_problem_and_cleans(corpus, tmp_path):
    report = check_manifest(corpus / "train.jsonl", out=tmp_path / "clean.jsonl", min_frames=2, workers=2,
                            progress=False)
    kinds = {(p.video_id, p.kind) for p in report.problems}
    assert kinds == {("one_frame", "too_short"), ("empty", "unreadable"), ("notes", "unreadable"),
                     ("truncated", "unreadable"), ("absent", "missing"), ("good", "window")}
    assert report.clips == 8 and report.videos == 6 and report.rows == 8
    assert [r.text_id for r in read_manifest(tmp_path / "clean.jsonl")] == ["good_0", "good_1"]
    detail = {p.video_id: p.detail for p in report.problems}
    assert "empty file" in detail["empty"] and "does not exist" in detail["absent"]
    assert "1 frame(s)" in detail["one_frame"]


def test_check_cli(corpus, tmp_path, capsys):
    rep = tmp_path / "report.json"
    assert main(["data", "check", str(corpus / "train.jsonl"), "--out", str(tmp_path / "c.jsonl"), "--workers", "1",
                 "--report", str(rep)]) == 0
    out = capsys.readouterr().out
    assert "3 OK, 5 with problems" in out and "missing 1" in out and "unreadable 3" in out and "window 1" in out
    assert len(json.loads(rep.read_text())["problems"]) == 5  # min_frames=1: the 1-frame video is fine


def test_compress_short_gop_fps_cap_resume(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_indexed_video(src / "a.mp4", 40)  # 64x48 at 10 fps
    (src / "bad.mp4").write_bytes(b"garbage")
    rows = [ManifestRow("a", "src/a.mp4", "a", "a_0", "train", start=1.0, end=3.0, duration=4.0),
            ManifestRow("bad", "src/bad.mp4", "b", "b_0", "train")]
    write_manifest(tmp_path / "train.jsonl", rows)
    out = tmp_path / "small"
    summary = compress_manifest(tmp_path / "train.jsonl", out, short_side=32, max_fps=5, gop=4, workers=2,
                                progress=False)
    assert "1 compressed, 0 already done, 1 failed" in summary
    new = read_manifest(out / "train.jsonl")
    assert [r.video_id for r in new] == ["a"] and new[0].path == "videos/src/a.mp4"
    path = out / new[0].path
    info = probe_video(path)
    assert (info.width, info.height) == (42, 32) and info.num_frames == 20 and abs(info.fps - 5) < 1e-6
    with av.open(str(path)) as c:
        keys = [i for i, p in enumerate(sorted((p for p in c.demux(video=0) if p.size), key=lambda p: p.pts))
                if p.is_keyframe]
    assert keys == [0, 4, 8, 12, 16]
    # the fps cap keeps frames by timestamp: frame k of the new file is frame 2k of the old one, and the
    # window [1 s, 3 s) still selects the same seconds
    frames, idx = read_frames(path, 4, "uniform", start=new[0].start, end=new[0].end)
    assert idx == [5, 8, 10, 13]
    assert [index_of(f) for f in frames.numpy()] == [2 * i for i in idx]
    mtime = path.stat().st_mtime_ns
    again = compress_manifest(tmp_path / "train.jsonl", out, short_side=32, max_fps=5, gop=4, workers=1, progress=False)
    assert "0 compressed, 1 already done, 1 failed" in again and path.stat().st_mtime_ns == mtime


def test_compress_keeps_names_apart_and_refuses_other_settings(tmp_path):
    from vtp_bench.data.manifest import ManifestError

    (tmp_path / "v").mkdir()
    write_indexed_video(tmp_path / "v" / "x.mp4", 10)
    write_indexed_video(tmp_path / "v" / "x.mkv", 20, fmt="matroska")  # same stem, other container
    rows = [ManifestRow("a", "v/x.mp4", "a", "a_0", "train"), ManifestRow("b", "v/x.mkv", "b", "b_0", "train")]
    write_manifest(tmp_path / "m.jsonl", rows)
    compress_manifest(tmp_path / "m.jsonl", tmp_path / "out", short_side=32, workers=2, progress=False)
    new = read_manifest(tmp_path / "out" / "m.jsonl")
    assert [r.path for r in new] == ["videos/v/x.mp4", "videos/v/x.mkv.mp4"]
    assert [probe_video(tmp_path / "out" / r.path).num_frames for r in new] == [10, 20]  # each its own video
    with pytest.raises(ManifestError, match="compressed with"):
        compress_manifest(tmp_path / "m.jsonl", tmp_path / "out", short_side=64, progress=False)
    write_manifest(tmp_path / "clash.jsonl", rows + [ManifestRow("c", "v/x.mkv.mp4", "c", "c_0", "train")])
    with pytest.raises(ManifestError, match="would both be written"):
        compress_manifest(tmp_path / "clash.jsonl", tmp_path / "out2", progress=False)


def test_data_synth_refuses_negative_counts_and_warns_of_empty_splits(tmp_path, capsys):
    from vtp_bench.cli import main

    assert main(["data", "synth", "--out", str(tmp_path / "a"), "--videos", "-3"]) == 2
    assert "num_videos and grounding_videos must be >= 0" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(tmp_path / "b"), "--videos", "5", "--grounding-videos", "0"]) == 0
    assert "WARNING: the val, test split(s)" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(tmp_path / "c"), "--videos", "6", "--splits", "2,2,2",
                 "--grounding-videos", "0"]) == 0
    assert "WARNING" not in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(tmp_path / "d"), "--videos", "6", "--splits", "2,2,3"]) == 2
    assert "must be >= 0 and sum to num_videos=6" in capsys.readouterr().err


def test_check_is_a_gate_and_its_clean_manifest_works_from_elsewhere(corpus, tmp_path, capsys):
    """Exit 1 when videos are bad (so scripts can stop); with --out in another folder the clean manifest's paths
    point at the same videos (they kept the old folder's relative paths)."""
    from vtp_bench.data.manifest import read_manifest, resolve_path

    assert main(["data", "check", str(corpus / "train.jsonl"), "--workers", "1"]) == 1
    out = tmp_path / "elsewhere" / "clean.jsonl"
    assert main(["data", "check", str(corpus / "train.jsonl"), "--out", str(out), "--workers", "1"]) == 0
    rows = read_manifest(out)
    assert rows and all(resolve_path(r.path, out).is_file() for r in rows)
    capsys.readouterr()
    assert main(["data", "compress", str(corpus / "train.jsonl"), "--out-dir", str(corpus)]) == 2
    assert "would replace it" in capsys.readouterr().err
