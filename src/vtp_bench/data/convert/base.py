"""What every converter shares: the registry entry, line-numbered reading and the error for a bad row.

A converter reads the official files as they are and returns manifest rows whose ``path`` is the video's
path *inside the dataset's video folder* (``video9770.mp4``, ``1012_Unbreakable/<clip>.avi``); the CLI
then places them under ``videos/`` next to the manifest or resolves them under ``--video-root``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from vtp_bench.data.manifest import ManifestError, ManifestRow
from vtp_bench.registry import Registry

CONVERTERS = Registry("converter format", packages=("vtp_bench.data.convert",))


class ConvertError(ManifestError):
    """An annotation file the converter cannot parse: the message names the file, the line and the fix."""


@dataclass
class Converted:
    rows: list[ManifestRow]
    dropped: list[str] = field(default_factory=list)  # rows left out on purpose, each with file:line and why


@dataclass(frozen=True)
class Converter:
    name: str
    inputs: tuple[str, ...]  # what each positional INPUT is, e.g. ("captions_msvd.json", "{split}_list.txt")
    description: str
    fn: Callable[..., Converted]
    optional_inputs: int = 0  # trailing inputs that may be left out
    variadic: bool = False  # the last input may be given several times (HMDB51: one split file per class)

    def __call__(self, inputs: Sequence[Path], split: str | None = None) -> Converted:
        lo, hi = len(self.inputs) - self.optional_inputs, len(self.inputs)
        if self.variadic:
            hi = max(hi, len(inputs))
        if not lo <= len(inputs) <= hi:
            want = " ".join(self.inputs[:lo]) + "".join(f" [{x}]" for x in self.inputs[lo:])
            raise ConvertError(f"format {self.name!r} takes {want}; got {len(inputs)} input file(s)")
        for p in inputs:
            if not Path(p).is_file():
                raise ConvertError(f"format {self.name!r}: input file {p} does not exist")
        return self.fn([Path(p) for p in inputs], split)


def converter(name: str, inputs: tuple[str, ...], optional_inputs: int = 0, variadic: bool = False) -> Callable:
    """Register ``fn(inputs, split) -> Converted`` under ``name``; its docstring's first line describes it.
    ``variadic``: the last input may repeat (a format whose annotations are one file per class)."""

    def deco(fn: Callable[..., Converted]) -> Callable[..., Converted]:
        doc = (fn.__doc__ or "").strip().splitlines()
        CONVERTERS.register(name)(Converter(name, inputs, doc[0] if doc else "", fn, optional_inputs, variadic))
        return fn

    return deco


def bad_line(path: Path, lineno: int, problem: str, expected: str) -> ConvertError:
    return ConvertError(f"{path} line {lineno}: {problem}; expected {expected}")


def read_text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline), skipping blank lines; undecodable text is an error."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConvertError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield lineno, line


def read_id_list(path: Path, header: str = "video_id") -> list[str]:
    """A split list: one id per line (``.txt``), or a one-column csv whose first line is ``header``."""
    ids = []
    for lineno, line in read_text_lines(path):
        value = line.strip()
        if lineno == 1 and value == header:
            continue
        if "," in value or "\t" in value:
            raise bad_line(path, lineno, f"{value!r} is not a single id", f"one {header} per line")
        ids.append(value)
    if not ids:
        raise ConvertError(f"{path}: the split list is empty")
    return ids


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ConvertError(f"{path} line {e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise ConvertError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_csv_rows(path: Path, delimiter: str = ",", required: Sequence[str] = ()) -> Iterator[tuple[int, dict]]:
    """DictReader rows with their 1-based line numbers; the header must hold ``required`` columns. A row with
    too few or too many fields, and a quote that is never closed (which would swallow the following lines
    into one field), are errors naming the line."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, strict=True)
        first = 1  # the line the row being read starts on
        try:
            header = next(reader, None) or []
            missing = [c for c in required if c not in header]
            if missing:
                raise ConvertError(f"{path} line 1: header {header} lacks column(s) {missing}; expected a header "
                                   f"with {', '.join(required)}")
            first = reader.line_num + 1
            for fields in reader:
                if any("\n" in x or "\r" in x for x in fields):
                    raise bad_line(path, first, f"a quoted field runs over {reader.line_num - first + 1} lines "
                                   f"(an unclosed quote?)", "one row per line")
                if len(fields) != len(header):
                    raise bad_line(path, first, f"{len(fields)} fields instead of {len(header)}",
                                   f"the header's columns {header}")
                yield first, dict(zip(header, fields))
                first = reader.line_num + 1
        except csv.Error as e:
            hint = "; a quote opened here is never closed" if "end of data" in str(e) else ""
            raise bad_line(path, first, f"malformed csv ({e}{hint})", "a valid csv row") from None


def split_from_name(path: Path, given: str | None, default: str) -> str:
    """The split a list file stands for: ``--split``, else train/val/test from its name, else ``default``."""
    if given:
        return given
    name = path.name.lower()
    for split in ("train", "val", "test"):
        if re.search(rf"(^|[^a-z]){split}", name):
            return split
    return default


def _relative_to(row: ManifestRow, base: Path) -> ManifestRow:
    """``row`` with its absolute ``path`` (and ``boxes``) relative to ``base`` when they lie below it."""
    def rel(p: str | None) -> str | None:
        if p is None or not Path(p).is_absolute():
            return p
        return Path(os.path.relpath(p, base)).as_posix() if Path(p).is_relative_to(base) else p

    return dataclasses.replace(row, path=rel(row.path), boxes=rel(row.boxes))


def place_videos(rows: list[ManifestRow], manifest: Path, video_root: Path | None
                 ) -> tuple[list[ManifestRow], list[str]]:
    """Give each row its final ``path``; returns the rows and the videos that were not found.

    Without ``video_root`` the videos are expected under ``videos/`` next to the manifest (nothing is
    checked). With it, each video is looked up there: at its dataset path, else by the same name with
    another extension in the same folder (``.mkv`` for ``.mp4``, ...), else by its name anywhere in the tree
    when that is unique. Found files are written relative to the manifest when they lie below its folder,
    else absolute; a video not found keeps ``<video_root>/<dataset path>`` and is reported.

    A row whose ``path`` is absolute was placed by its converter (one that reads another manifest): it is kept,
    written relative to the manifest when below its folder, and so is its ``boxes`` file.
    """
    base = manifest.expanduser().resolve().parent
    if any(Path(r.path).is_absolute() for r in rows):
        placed = [_relative_to(r, base) for r in rows if Path(r.path).is_absolute()]
        rest, missing = place_videos([r for r in rows if not Path(r.path).is_absolute()], manifest, video_root)
        return placed + rest, missing
    if video_root is None:
        return [dataclasses.replace(r, path=f"videos/{r.path}") for r in rows], []
    root = Path(video_root).expanduser().resolve()
    if not root.is_dir():
        raise ConvertError(f"--video-root {video_root} is not a directory")
    by_folder_stem: dict[tuple[str, str], list[str]] = {}
    by_stem: dict[str, list[str]] = {}
    for folder, _, files in os.walk(root):
        rel_folder = Path(folder).relative_to(root).as_posix()
        for name in files:
            rel = name if rel_folder == "." else f"{rel_folder}/{name}"
            key = name.rsplit(".", 1)[0] if "." in name else name
            by_folder_stem.setdefault(("" if rel_folder == "." else rel_folder, key), []).append(rel)
            by_stem.setdefault(key, []).append(rel)
    found: dict[str, str | None] = {}
    for r in rows:
        if r.path in found:
            continue
        native = Path(r.path)
        folder = "" if native.parent.as_posix() == "." else native.parent.as_posix()
        key = native.name.rsplit(".", 1)[0] if "." in native.name else native.name
        if (root / native).is_file():
            found[r.path] = native.as_posix()
        elif by_folder_stem.get((folder, key)):
            found[r.path] = sorted(by_folder_stem[(folder, key)])[0]
        elif len(by_stem.get(key, [])) == 1:
            found[r.path] = by_stem[key][0]
        else:
            found[r.path] = None
    out = []
    missing = [p for p, rel in found.items() if rel is None]
    for r in rows:
        rel = found[r.path]
        full = root / (rel if rel is not None else r.path)
        path = os.path.relpath(full, base) if full.is_relative_to(base) else str(full)
        out.append(dataclasses.replace(r, path=Path(path).as_posix()))
    return out, missing
