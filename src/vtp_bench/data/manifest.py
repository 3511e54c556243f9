"""The one manifest schema every dataset converts to: JSON Lines, one row per (video, text) pair or per
grounding query. The schema is documented in ``data_manifests/README.md``; keep the two in step.

Columns (required first)::

    video_id  str          id of the video (several rows may share one video)
    path      str          video file, relative to the manifest's directory unless absolute
                           (a ``video_root`` given to :func:`resolve_path` replaces that base)
    text      str          the caption / query sentence
    text_id   str          unique within a manifest
    split     str          train / val / test / grounding / ...
    start     float|null   seconds: a grounding query's moment or a clip segment of a longer video
    end       float|null   seconds (start < end when both are set)
    duration  float|null   seconds, of the whole video
    label     str|null     class name, for zero-shot classification
    boxes     str|null     .npz of per-frame object boxes, relative like ``path``
    source    str          format name the row was converted from, e.g. "synthetic"

Unknown columns are an error (a typo such as ``strat`` would otherwise be silently ignored).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable

from vtp_bench.atomic import atomic_write_text

SCHEMA_DOC = "data_manifests/README.md"
REQUIRED = ("video_id", "path", "text", "text_id", "split")
_STR_OPTIONAL = ("label", "boxes")
_FLOAT_OPTIONAL = ("start", "end", "duration")


class ManifestError(ValueError):
    """A manifest that cannot be read: the message names the file, the line and the fix."""


class ManifestNotFoundError(ManifestError, FileNotFoundError):
    """The manifest file itself does not exist."""


@dataclass(frozen=True)
class ManifestRow:
    video_id: str
    path: str
    text: str
    text_id: str
    split: str
    start: float | None = None
    end: float | None = None
    duration: float | None = None
    label: str | None = None
    boxes: str | None = None
    source: str = "unknown"

    def __post_init__(self) -> None:
        problem = _check_row({k: getattr(self, k) for k in COLUMNS})
        if problem:
            raise ManifestError(f"invalid manifest row (text_id={self.text_id!r}): {problem}")
        for k in _FLOAT_OPTIONAL:  # ints are accepted where seconds are expected; store floats
            v = getattr(self, k)
            if v is not None and not isinstance(v, float):
                object.__setattr__(self, k, float(v))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ManifestRow":
        """Validate a parsed JSON object and build the row; ints are accepted where floats are expected."""
        problem = _check_row(d)
        if problem:
            raise ManifestError(problem)
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS = tuple(f.name for f in fields(ManifestRow))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_row(d: dict[str, Any]) -> str | None:
    """The first problem of a row as a human sentence (no location), or None."""
    if not isinstance(d, dict):
        return f"expected a JSON object per line, got {type(d).__name__}"
    unknown = [k for k in d if k not in COLUMNS]
    if unknown:
        return (f"unknown column(s) {', '.join(repr(k) for k in unknown)} (allowed: {', '.join(COLUMNS)}; "
                f"see {SCHEMA_DOC})")
    for k in REQUIRED:
        if k not in d or d[k] is None:
            return f"missing column {k!r} (each row needs {', '.join(REQUIRED)}; see {SCHEMA_DOC})"
        if not isinstance(d[k], str):
            return f"column {k!r} must be a string, got {type(d[k]).__name__} {d[k]!r}"
        if not d[k].strip():
            return f"column {k!r} is empty"
    if "source" in d and not isinstance(d["source"], str):
        return f"column 'source' must be a string, got {type(d['source']).__name__} {d['source']!r}"
    for k in _STR_OPTIONAL:
        v = d.get(k)
        if v is not None and not isinstance(v, str):
            return f"column {k!r} must be a string or null, got {type(v).__name__} {v!r}"
    for k in _FLOAT_OPTIONAL:
        v = d.get(k)
        if v is not None and not _is_number(v):
            return f"column {k!r} must be a finite number of seconds or null, got {type(v).__name__} {v!r}"
        if v is not None and v < 0:
            return f"column {k!r} must be >= 0 seconds, got {v!r}"
    start, end, duration = d.get("start"), d.get("end"), d.get("duration")
    if start is not None and end is not None and not start < end:
        return f"'start' ({start}) must be smaller than 'end' ({end})"
    if (start is None) != (end is None):
        return "'start' and 'end' must be given together (both numbers or both null)"
    if duration is not None and end is not None and end > duration + 1e-3:
        return f"'end' ({end}) lies after the video's 'duration' ({duration})"
    return None


def _missing_manifest_message(path: Path) -> str:
    return (f"manifest file {path} does not exist; expected a JSON Lines manifest there "
            f"(schema: {SCHEMA_DOC}). Create the synthetic dataset with `vtp-bench data synth --out DIR` "
            f"(it writes DIR/train.jsonl, val.jsonl, test.jsonl, grounding.jsonl), or convert official "
            f"annotations with `vtp-bench data convert`")


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """Parse and validate a manifest. Blank lines are skipped; every other line must be one JSON object."""
    path = Path(path)
    if not path.exists():
        raise ManifestNotFoundError(_missing_manifest_message(path))
    if not path.is_file():
        raise ManifestError(f"manifest {path} is not a file (expected a .jsonl file; see {SCHEMA_DOC})")
    rows: list[ManifestRow] = []
    seen: dict[str, int] = {}
    video_at: dict[str, tuple[str, int]] = {}  # video_id -> (path, first line)
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ManifestError(f"{path} line {lineno}: not valid JSON ({e.msg} at column {e.colno}); "
                                        f"each line must be one JSON object (see {SCHEMA_DOC})") from None
                try:
                    row = ManifestRow.from_dict(obj)
                except ManifestError as e:
                    raise ManifestError(f"{path} line {lineno}: {e}") from None
                if row.text_id in seen:
                    raise ManifestError(f"{path} line {lineno}: duplicate text_id {row.text_id!r} (first on line "
                                        f"{seen[row.text_id]}); text_id must be unique within a manifest")
                seen[row.text_id] = lineno
                first = video_at.setdefault(row.video_id, (row.path, lineno))
                if first[0] != row.path:  # two files under one id: one video's captions would score the other
                    raise ManifestError(f"{path} line {lineno}: video_id {row.video_id!r} has path {row.path!r}, "
                                        f"but line {first[1]} gives it {first[0]!r}; one video_id is one file: "
                                        "give the two files different video_ids, or fix the path")
                rows.append(row)
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); "
                            f"a manifest is a UTF-8 JSON Lines file (see {SCHEMA_DOC})") from None
    return rows


def write_manifest(path: str | os.PathLike, rows: Iterable[ManifestRow]) -> Path:
    """Write rows as JSON Lines (all columns, fixed order, nulls kept), atomically; returns the path.

    The output is byte-deterministic for equal rows. Duplicate text_ids are refused.
    """
    path = Path(path)
    lines, seen = [], set()
    for i, row in enumerate(rows):
        if not isinstance(row, ManifestRow):
            raise TypeError(f"write_manifest: row {i} is a {type(row).__name__}, expected ManifestRow")
        if row.text_id in seen:
            raise ManifestError(f"write_manifest {path}: duplicate text_id {row.text_id!r} (row {i})")
        seen.add(row.text_id)
        lines.append(json.dumps(row.to_dict(), ensure_ascii=False, allow_nan=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def resolve_path(row_path: str, manifest_path: str | os.PathLike, video_root: str | os.PathLike | None = None
                 ) -> Path:
    """A row's ``path`` (or ``boxes``) as a file path: absolute paths stay; relative ones are joined to
    ``video_root`` when given, else to the manifest file's directory. ``~`` is expanded."""
    p = Path(row_path).expanduser()
    if p.is_absolute():
        return p
    base = Path(video_root).expanduser() if video_root is not None else Path(manifest_path).parent
    return base / p
