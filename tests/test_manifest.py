"""The manifest schema: round trip, path resolution, and errors that name the file, line, column and fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vtp_bench.data.manifest import (
    COLUMNS,
    REQUIRED,
    ManifestError,
    ManifestNotFoundError,
    ManifestRow,
    read_manifest,
    resolve_path,
    write_manifest,
)

GOOD = {"video_id": "v1", "path": "videos/v1.mp4", "text": "a red circle moves left", "text_id": "t1",
        "split": "train"}


def _write_lines(path: Path, objs) -> Path:
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs))
    return path


def test_columns_match_the_documented_schema():
    assert COLUMNS == ("video_id", "path", "text", "text_id", "split", "start", "end", "duration", "label",
                       "boxes", "source")
    assert REQUIRED == ("video_id", "path", "text", "text_id", "split")
    readme = Path(__file__).resolve().parents[1] / "data_manifests" / "README.md"
    if readme.is_file():
        text = readme.read_text()
        for c in COLUMNS:
            assert f"`{c}`" in text, f"column {c} is not documented in {readme}"


def test_roundtrip(tmp_path):
    rows = [
        ManifestRow(**GOOD),
        ManifestRow("v1", "videos/v1.mp4", "second caption", "t2", "train", source="synthetic"),
        ManifestRow("v2", "/abs/v2.mp4", "the red circle moves left", "g0", "grounding", start=1, end=2.5,
                    duration=10.0, label="left", boxes="boxes/v2.npz", source="synthetic"),
    ]
    p = write_manifest(tmp_path / "sub" / "m.jsonl", rows)
    back = read_manifest(p)
    assert back == rows
    assert isinstance(back[2].start, float) and back[2].start == 1.0
    # byte-deterministic, one object per line, all columns in schema order
    first = p.read_bytes()
    write_manifest(p, back)
    assert p.read_bytes() == first
    line = json.loads(p.read_text().splitlines()[0])
    assert list(line) == list(COLUMNS)
    assert line["start"] is None and line["source"] == "unknown"


def test_minimal_row_defaults(tmp_path):
    p = _write_lines(tmp_path / "m.jsonl", [GOOD, "", {**GOOD, "text_id": "t2", "start": 0, "end": 3}])
    rows = read_manifest(p)  # blank lines are skipped
    assert len(rows) == 2
    r = rows[0]
    assert (r.start, r.end, r.duration, r.label, r.boxes, r.source) == (None, None, None, None, None, "unknown")
    assert rows[1].start == 0.0 and rows[1].end == 3.0


def test_resolve_path(tmp_path):
    m = tmp_path / "data" / "train.jsonl"
    assert resolve_path("videos/a.mp4", m) == tmp_path / "data" / "videos" / "a.mp4"
    other = tmp_path / "elsewhere"
    assert resolve_path("videos/a.mp4", m, video_root=other) == other / "videos" / "a.mp4"
    assert resolve_path("/abs/a.mp4", m, video_root=tmp_path) == Path("/abs/a.mp4")
    assert resolve_path("~/a.mp4", m) == Path("~/a.mp4").expanduser()
    assert resolve_path("a.mp4", "train.jsonl") == Path("a.mp4")


def test_missing_file_says_how_to_create_it(tmp_path):
    with pytest.raises(ManifestError) as e:
        read_manifest(tmp_path / "data" / "x.jsonl")
    msg = str(e.value)
    assert "x.jsonl" in msg and "vtp-bench data synth --out" in msg and "vtp-bench data convert" in msg
    assert isinstance(e.value, ManifestNotFoundError) and isinstance(e.value, FileNotFoundError)
    with pytest.raises(ManifestError, match="not a file"):
        read_manifest(tmp_path)


def _error(tmp_path, objs) -> str:
    p = _write_lines(tmp_path / "x.jsonl", objs)
    with pytest.raises(ManifestError) as e:
        read_manifest(p)
    return str(e.value)


def test_missing_column_names_file_line_column_and_fix(tmp_path):
    bad = {k: v for k, v in GOOD.items() if k != "text"} | {"text_id": "t9"}
    msg = _error(tmp_path, [GOOD, {**GOOD, "text_id": "t2"}, "", bad])
    assert msg.startswith(f"{tmp_path / 'x.jsonl'} line 4: missing column 'text'")
    assert "video_id, path, text, text_id, split" in msg and "data_manifests/README.md" in msg
    assert "line 1: missing column 'video_id'" in _error(tmp_path, [{**GOOD, "video_id": None}])


def test_unknown_columns_are_named(tmp_path):
    msg = _error(tmp_path, [{**GOOD, "strat": 1.0, "caption": "x"}])
    assert "line 1" in msg and "'strat'" in msg and "'caption'" in msg and "allowed:" in msg


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"start": "1.5", "end": 2.0}, "column 'start' must be a finite number"),
        ({"start": True, "end": 2.0}, "column 'start' must be a finite number"),
        ({"start": 1.0, "end": float("nan")}, "column 'end' must be a finite number"),
        ({"duration": [3]}, "column 'duration' must be a finite number"),
        ({"start": -1.0, "end": 2.0}, "'start' must be >= 0"),
        ({"start": 3.0, "end": 2.0}, "must be smaller than 'end'"),
        ({"start": 3.0}, "must be given together"),
        ({"start": 3.0, "end": 12.0, "duration": 10.0}, "after the video's 'duration'"),
        ({"text": 5}, "column 'text' must be a string"),
        ({"text": "  "}, "column 'text' is empty"),
        ({"label": 3}, "column 'label' must be a string or null"),
        ({"boxes": 3}, "column 'boxes' must be a string or null"),
        ({"source": None}, "column 'source' must be a string"),
    ],
)
def test_wrong_types_name_the_line(tmp_path, change, needle):
    msg = _error(tmp_path, [GOOD, {**GOOD, "text_id": "t2", **change}])
    assert " line 2: " in msg and needle in msg, msg


def test_duplicate_text_id(tmp_path):
    msg = _error(tmp_path, [GOOD, {**GOOD, "video_id": "v2"}, {**GOOD, "text_id": "t3"}])
    assert "line 2: duplicate text_id 't1' (first on line 1)" in msg


def test_not_json_and_not_object(tmp_path):
    assert "line 2: not valid JSON" in _error(tmp_path, [GOOD, '{"video_id": "v1",'])
    assert "line 1: expected a JSON object per line, got list" in _error(tmp_path, ["[1, 2]"])


def test_not_utf8(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"video_id": "\xff\xfe"}\n')
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_manifest(p)


def test_row_validates_on_construction_and_write_refuses_duplicates(tmp_path):
    with pytest.raises(ManifestError, match="must be smaller than 'end'"):
        ManifestRow("v", "a.mp4", "t", "t0", "test", start=2.0, end=1.0)
    with pytest.raises(ManifestError, match="duplicate text_id"):
        write_manifest(tmp_path / "m.jsonl", [ManifestRow(**GOOD), ManifestRow(**GOOD)])
    with pytest.raises(TypeError, match="expected ManifestRow"):
        write_manifest(tmp_path / "m.jsonl", [GOOD])
    assert not (tmp_path / "m.jsonl").exists()


def test_rows_are_frozen():
    r = ManifestRow(**GOOD)
    with pytest.raises(AttributeError):
        r.text = "changed"  # type: ignore[misc]


def test_one_video_id_with_two_paths_is_refused_naming_both_lines(tmp_path):
    """Two files under one video_id were merged silently (a caption scored against the other file)."""
    from vtp_bench.data.manifest import ManifestError, read_manifest

    p = tmp_path / "test.jsonl"
    rows = [{"video_id": "a", "path": "a.mp4", "text": "one", "text_id": "a_0", "split": "test"},
            {"video_id": "b", "path": "b.mp4", "text": "two", "text_id": "b_0", "split": "test"},
            # a second caption: fine
            {"video_id": "a", "path": "a.mp4", "text": "three", "text_id": "a_1", "split": "test"},
            {"video_id": "a", "path": "c.mp4", "text": "four", "text_id": "a_2", "split": "test"}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ManifestError, match=r"line 4: video_id 'a' has path 'c.mp4', but line 1 gives it 'a.mp4'"):
        read_manifest(p)
    p.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    assert len(read_manifest(p)) == 3


def test_an_empty_test_split_is_refused(tmp_path):
    from vtp_bench.data.manifest import ManifestError
    from vtp_bench.tasks.retrieval import RetrievalSet

    p = tmp_path / "test.jsonl"
    p.write_text("")
    with pytest.raises(ManifestError, match="holds no rows, so there is nothing to score"):
        RetrievalSet.from_manifest(p)
