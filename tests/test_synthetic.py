"""The synthetic dataset: layout, determinism, unique captions, captions consistent with boxes and pixels,
grounding events, and the reader/manifest contract."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from vtp_bench.data.manifest import read_manifest, resolve_path
from vtp_bench.data.synthetic import (
    COLORS,
    MOTIONS,
    PHRASES,
    SHAPES,
    _split_counts,
    generate_synthetic,
)
from vtp_bench.data.video import probe_video, read_frames

SPLITS = (8, 2, 2)
N_GROUNDING = 4


def _gen(path: Path, seed: int) -> dict:
    return generate_synthetic(path, num_videos=12, seed=seed, splits=SPLITS, grounding_videos=N_GROUNDING,
                              progress=False)


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "a"
    summary = _gen(out, seed=0)
    assert summary["counts"]["train"] == 8 and summary["counts"]["grounding_videos"] == N_GROUNDING
    return out


def _clip_rows(ds: Path):
    return [r for s in ("train", "val", "test") for r in read_manifest(ds / f"{s}.jsonl")]


def _decode_all(ds: Path, row) -> np.ndarray:
    frames, idx = read_frames(resolve_path(row.path, ds / "train.jsonl"), 10_000)
    assert idx == list(range(len(idx)))
    return frames.numpy()


def test_layout_and_metadata(ds):
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "grounding.jsonl", "classes.json", "meta.json"):
        assert (ds / name).is_file(), name
    meta = json.loads((ds / "meta.json").read_text())
    assert meta["seed"] == 0 and meta["version"] >= 1
    assert meta["counts"]["train"] == 8 and meta["counts"]["val"] == 2 and meta["counts"]["test"] == 2
    assert meta["params"]["size"] == 96 and meta["params"]["fps"] == 8
    classes = json.loads((ds / "classes.json").read_text())
    assert classes["classes"] == list(MOTIONS) and len(classes["prompts"]) == 9
    assert "{}" in classes["template"]
    assert len(list((ds / "videos").glob("*.mp4"))) == 12
    assert len(list((ds / "videos_grounding").glob("*.mp4"))) == N_GROUNDING
    assert len(list((ds / "boxes").glob("*.npz"))) == 12 + N_GROUNDING
    assert len(COLORS) >= 6 and len(SHAPES) >= 4 and len(MOTIONS) == 9


def test_manifests_parse_and_point_at_files(ds):
    for split, n in zip(("train", "val", "test"), SPLITS):
        rows = read_manifest(ds / f"{split}.jsonl")
        assert len(rows) == n
        for r in rows:
            assert r.split == split and r.source == "synthetic" and r.duration == 2.0
            assert r.label in MOTIONS and r.start is None and r.end is None
            assert resolve_path(r.path, ds / f"{split}.jsonl").is_file()
            assert resolve_path(r.boxes, ds / f"{split}.jsonl").is_file()


def test_videos_decode(ds):
    for r in _clip_rows(ds)[:4]:
        p = resolve_path(r.path, ds / "train.jsonl")
        info = probe_video(p)
        assert (info.num_frames, info.width, info.height) == (16, 96, 96)
        assert info.fps == pytest.approx(8.0) and info.duration == pytest.approx(2.0, abs=0.13)
        frames, idx = read_frames(p, 4, size=64)
        assert frames.shape == (4, 64, 64, 3) and idx == [1, 5, 9, 13]


def test_deterministic_by_seed(ds, tmp_path):
    b = tmp_path / "b"
    _gen(b, seed=0)
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "grounding.jsonl", "classes.json", "meta.json"):
        assert (ds / name).read_bytes() == (b / name).read_bytes(), name
    rows = _clip_rows(ds) + read_manifest(ds / "grounding.jsonl")[:1]
    for r in rows:
        assert np.array_equal(_decode_all(ds, r), _decode_all(b, r)), r.video_id
        za, zb = np.load(resolve_path(r.boxes, ds / "x")), np.load(resolve_path(r.boxes, b / "x"))
        for k in za.files:
            assert np.array_equal(za[k], zb[k]), k
    c = tmp_path / "c"
    _gen(c, seed=1)
    assert (ds / "train.jsonl").read_bytes() != (c / "train.jsonl").read_bytes()
    r = _clip_rows(ds)[0]
    assert not np.array_equal(_decode_all(ds, r), _decode_all(c, r))


def test_captions_unique(ds):
    rows = _clip_rows(ds)
    for split in ("train", "val", "test"):
        caps = [r.text for r in rows if r.split == split]
        assert len(set(caps)) == len(caps)
    assert len({r.text for r in rows}) == len(rows)  # even across splits


def _center(box: np.ndarray) -> tuple[float, float]:
    return float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2


def _area(box: np.ndarray) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1]))


def _check_motion(motion: str, boxes: np.ndarray, visible: np.ndarray) -> None:
    """boxes [T, 4], visible [T] of one object agree with its motion."""
    vis = np.flatnonzero(visible)
    first, last = boxes[vis[0]], boxes[vis[-1]]
    (x0, y0), (x1, y1) = _center(first), _center(last)
    if motion in ("appear", "disappear"):
        switches = np.flatnonzero(np.diff(visible.astype(int)))
        assert len(switches) == 1
        assert 0.25 * len(visible) <= switches[0] + 1 <= 0.65 * len(visible)  # mid-clip
        assert (not visible[0] and visible[-1]) if motion == "appear" else (visible[0] and not visible[-1])
        assert np.all(boxes[~visible] == 0)
    else:
        assert visible.all()
    if motion == "left":
        assert x0 - x1 >= 0.3 and abs(y1 - y0) < 1e-6
    elif motion == "right":
        assert x1 - x0 >= 0.3 and abs(y1 - y0) < 1e-6
    elif motion == "up":
        assert y0 - y1 >= 0.3 and abs(x1 - x0) < 1e-6
    elif motion == "down":
        assert y1 - y0 >= 0.3 and abs(x1 - x0) < 1e-6
    elif motion == "grow":
        assert _area(last) > 2 * _area(first) and np.all(np.diff([_area(b) for b in boxes]) > 0)
    elif motion == "shrink":
        assert _area(last) < 0.5 * _area(first) and np.all(np.diff([_area(b) for b in boxes]) < 0)
    elif motion in ("still", "appear", "disappear"):
        assert np.allclose(boxes[vis], boxes[vis[0]])


def test_captions_match_boxes_and_pixels(ds):
    for r in _clip_rows(ds):
        z = np.load(resolve_path(r.boxes, ds / "x"))
        boxes, visible, labels, motions = z["boxes"], z["visible"], list(z["labels"]), list(z["motions"])
        assert boxes.dtype == np.float32 and boxes.shape == (16, len(labels), 4) and visible.dtype == bool
        assert 2 <= len(labels) <= 3
        assert boxes.min() >= 0 and boxes.max() <= 1
        assert r.label == motions[0]  # class = motion of the first-mentioned object
        assert r.text.startswith(f"a {labels[0]} ")
        assert len({str(c) for c in z["colors"]}) == len(labels)  # distinct colours: unambiguous captions
        for k, (label, motion) in enumerate(zip(labels, motions)):
            size, color, shape = label.split()
            assert size in ("small", "large") and color in COLORS and shape in SHAPES
            assert (z["sizes"][k], z["colors"][k], z["shapes"][k]) == (size, color, shape)
            assert any(f"a {label} {phrase}" in r.text for phrase in PHRASES[motion]), (r.text, label, motion)
            _check_motion(motion, boxes[:, k], visible[:, k])
        # every object of the caption is accounted for
        assert len(re.findall(r"\ba (?:small|large) ", r.text)) == len(labels)
        # the decoded pixel at each visible box centre has the object's colour
        frames = _decode_all(ds, r)
        for t in range(16):
            for k in range(len(labels)):
                if not visible[t, k]:
                    continue
                cx, cy = _center(boxes[t, k])
                px = frames[t, int(cy * 96), int(cx * 96)].astype(int)
                assert np.abs(px - np.array(COLORS[str(z["colors"][k])])).max() <= 45, (r.video_id, t, k, px)


def test_grounding_events(ds):
    rows = read_manifest(ds / "grounding.jsonl")
    by_video: dict[str, list] = {}
    for r in rows:
        by_video.setdefault(r.video_id, []).append(r)
        assert r.split == "grounding" and r.source == "synthetic"
        assert 0 <= r.start < r.end <= r.duration and 8.0 <= r.duration <= 12.0
        assert r.label in MOTIONS and r.label != "still"
        assert resolve_path(r.path, ds / "grounding.jsonl").is_file()
    assert len(by_video) == N_GROUNDING
    for vid, events in by_video.items():
        assert 2 <= len(events) <= 4
        assert len({e.text for e in events}) == len(events)
        for a, b in zip(events, events[1:]):
            assert a.end <= b.start  # sequential, non-overlapping
        z = np.load(resolve_path(events[0].boxes, ds / "x"))
        boxes, visible = z["boxes"], z["visible"]
        fps = 8
        assert boxes.shape[0] == round(events[0].duration * fps)
        assert visible.any(axis=0).all()  # every listed object shows at some point
        descr = [f"{c} {s}" for c, s in zip(z["colors"], z["shapes"])]
        changing = np.zeros(boxes.shape[:2], bool)  # frames in which each object is in an event
        for e in events:
            k = [i for i, d in enumerate(descr) if e.text.startswith(f"the {d} ")]
            assert len(k) == 1, (e.text, descr)
            k = k[0]
            assert any(e.text == f"the {descr[k]} {p}" for p in PHRASES[e.label])
            f0, f1 = round(e.start * fps), round(e.end * fps)
            changing[f0:f1, k] = True
            before, after = max(f0 - 1, 0), f1 - 1
            if e.label == "appear":
                assert not visible[before, k] and visible[after, k]
            elif e.label == "disappear":
                assert visible[before, k] and not visible[after, k]
            else:
                assert visible[before, k] and visible[after, k]
                (x0, y0), (x1, y1) = _center(boxes[before, k]), _center(boxes[after, k])
                delta = {"left": x0 - x1, "right": x1 - x0, "up": y0 - y1, "down": y1 - y0,
                         "grow": _area(boxes[after, k]) - 1.5 * _area(boxes[before, k]),
                         "shrink": 0.6 * _area(boxes[before, k]) - _area(boxes[after, k])}[e.label]
                assert delta > (0.25 if e.label in ("left", "right", "up", "down") else 0), (e.text, delta)
        # outside its events an object does not change (still or absent)
        for k in range(boxes.shape[1]):
            for t in range(1, boxes.shape[0]):
                if not changing[t, k]:
                    assert visible[t, k] == visible[t - 1, k]
                    assert np.allclose(boxes[t, k], boxes[t - 1, k])
        frames, _ = read_frames(resolve_path(events[0].path, ds / "x"), 4, start=events[0].start, end=events[0].end)
        assert frames.shape[0] == 4


def test_split_counts():
    assert _split_counts(1000, (0.8, 0.1, 0.1)) == {"train": 800, "val": 100, "test": 100}  # chance R@1 = 1 %
    assert _split_counts(12, (8, 2, 2)) == {"train": 8, "val": 2, "test": 2}
    with pytest.raises(ValueError, match="sum to num_videos"):
        _split_counts(12, (8, 2, 1))
    with pytest.raises(ValueError, match="sum to 1"):
        _split_counts(12, (0.5, 0.1, 0.1))


def test_regenerate_in_place_and_refuse_foreign_dir(tmp_path):
    out = tmp_path / "s"
    generate_synthetic(out, num_videos=6, seed=0, splits=(4, 1, 1), grounding_videos=1, progress=False)
    generate_synthetic(out, num_videos=3, seed=0, splits=(1, 1, 1), grounding_videos=0, progress=False)
    assert len(list((out / "videos").glob("*.mp4"))) == 3  # stale files of the first run are gone
    assert read_manifest(out / "grounding.jsonl") == []
    # an interrupted run leaves a provisional meta.json: regenerating over it works
    interrupted = tmp_path / "cut"
    (interrupted / "videos").mkdir(parents=True)
    (interrupted / "videos" / "synth_00099.tmp.mp4").write_bytes(b"half")
    (interrupted / "meta.json").write_text(json.dumps({"generator": "vtp_bench.data.synthetic", "complete": False}))
    generate_synthetic(interrupted, num_videos=3, seed=0, splits=(1, 1, 1), grounding_videos=0, progress=False)
    assert sorted(p.name for p in (interrupted / "videos").iterdir()) == [f"synth_0000{i}.mp4" for i in range(3)]
    assert "complete" not in json.loads((interrupted / "meta.json").read_text())
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_synthetic(foreign, num_videos=3, seed=0, splits=(1, 1, 1), grounding_videos=0, progress=False)
    assert (foreign / "thesis.tex").read_text() == "keep me"
