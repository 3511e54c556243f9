"""Your own videos as a dataset: a manifest from a folder of video files and their captions.

Captions come from one of:
- a CSV with ``video`` and ``caption`` columns (other columns are ignored; several rows per video allowed),
- a JSON object ``{video: [captions]}`` (or ``{video: caption}``),
- no file: a ``.txt`` next to each video (same stem), one caption per non-empty line.

A caption's ``video`` names a file of the folder by its path relative to the folder, its file name, or its stem.
Every video without a caption and every caption without a video is reported by name and count, and nothing is
left out silently: with either kind present the manifest is refused unless ``allow_missing``. Durations are read
from the container's metadata (no decoding); a file whose header cannot be read is reported the same way.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from vtp_bench.data.manifest import ManifestError, ManifestRow
from vtp_bench.data.video import VideoReadError, probe_video

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")


class FromFolderError(ManifestError):
    """The folder and the captions do not match (or cannot be read); the message names the files and the fix."""


@dataclass
class FolderReport:
    rows: list[ManifestRow]
    videos: int  # videos written
    no_caption: list[str] = field(default_factory=list)  # videos of the folder that no caption names
    no_video: list[str] = field(default_factory=list)  # caption keys that name no video of the folder
    unreadable: list[str] = field(default_factory=list)  # videos whose header could not be read

    def problems(self) -> list[str]:
        out = []
        for what, names in (("videos without a caption", self.no_caption), ("captions without a video",
                                                                              self.no_video),
                            ("unreadable videos", self.unreadable)):
            if names:
                shown = ", ".join(names[:10]) + (f", ... ({len(names) - 10} more)" if len(names) > 10 else "")
                out.append(f"{len(names)} {what}: {shown}")
        return out


def find_videos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def read_captions(path: Path) -> dict[str, list[str]]:
    """``{video key: [captions]}`` from a CSV (``video``, ``caption`` columns) or a JSON file."""
    if not path.is_file():
        raise FromFolderError(f"captions file {path} does not exist")
    try:  # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise FromFolderError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at position {e.start}, e.g. a "
                              "Latin-1 file); save it as UTF-8 (Excel: 'CSV UTF-8'; iconv -f latin1 -t utf-8)"
                              ) from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise FromFolderError(f"{path}: not valid JSON ({e}); expected {{video: [captions]}}") from None
        if not isinstance(data, dict):
            raise FromFolderError(f"{path}: expected a JSON object {{video: [captions]}}, got {type(data).__name__}")
        out: dict[str, list[str]] = {}
        for k, v in data.items():
            caps = [v] if isinstance(v, str) else v
            if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
                raise FromFolderError(f"{path}: the captions of {k!r} must be a string or a list of strings")
            if not caps or not all(c.strip() for c in caps):
                raise FromFolderError(f"{path}: video {k!r} has an empty caption; give it a caption, or leave "
                                      "the video out")
            out[str(k)] = [c.strip() for c in caps]
        return out
    out = {}
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None or not {"video", "caption"} <= set(reader.fieldnames):
        raise FromFolderError(f"{path}: a captions CSV needs a header with the columns 'video' and 'caption' "
                              f"(found {reader.fieldnames}); one row per (video, caption)")
    for line, row in enumerate(reader, start=2):
        if not (row["video"] or "").strip() or not (row["caption"] or "").strip():
            raise FromFolderError(f"{path} line {line}: empty 'video' or 'caption' (every row names a video and "
                                  "gives it a caption; a video without one would silently drop out)")
        out.setdefault(row["video"].strip(), []).append(row["caption"].strip())
    return out


def _text_captions(videos: list[Path]) -> dict[Path, list[str]]:
    out = {}
    for v in videos:
        txt = v.with_suffix(".txt")
        if txt.is_file():
            out[v] = [line.strip() for line in txt.read_text(encoding="utf-8").splitlines() if line.strip()]
    return out


def _match(keys: dict[str, list[str]], videos: list[Path], folder: Path) -> tuple[dict[Path, list[str]], list[str]]:
    """Caption keys -> video files (relative path, file name or stem); the keys that name no video."""
    by: dict[str, list[Path]] = {}
    for v in videos:
        rel = v.relative_to(folder)
        for k in {rel.as_posix(), v.name, rel.with_suffix("").as_posix(), v.stem}:
            by.setdefault(k, []).append(v)
    matched: dict[Path, list[str]] = {}
    unmatched = []
    for key, caps in keys.items():
        hits = by.get(key.replace(os.sep, "/"), [])
        if len(set(hits)) > 1:
            raise FromFolderError(f"caption key {key!r} names {len(set(hits))} videos "
                                  f"({', '.join(sorted(str(h.relative_to(folder)) for h in set(hits)))}); "
                                  "name it by its path with the extension")
        if not hits:
            unmatched.append(key)
        else:
            matched.setdefault(hits[0], []).extend(caps)
    return matched, sorted(unmatched)


def manifest_from_folder(folder: Path, captions: Path | None, out: Path, split: str = "test",
                         allow_missing: bool = False) -> FolderReport:
    """The manifest rows of ``folder``'s videos with their captions (paths relative to ``out``'s folder where
    the videos lie below it); raises ``FromFolderError`` on any mismatch unless ``allow_missing``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FromFolderError(f"{folder} is not a folder of videos")
    videos = find_videos(folder)
    if not videos:
        raise FromFolderError(f"{folder} holds no video files ({', '.join(VIDEO_EXTENSIONS)})")
    if captions is None:
        matched, no_video = _text_captions(videos), []
    else:
        matched, no_video = _match(read_captions(Path(captions)), videos, folder)
    report = FolderReport([], 0, no_caption=sorted(str(v.relative_to(folder)) for v in videos if not matched.get(v)),
                          no_video=no_video)
    base = Path(out).resolve().parent
    for v in videos:
        caps = [c for c in matched.get(v, []) if c]
        if not caps:
            continue
        try:
            duration = probe_video(v).duration
        except VideoReadError as e:
            report.unreadable.append(f"{v.relative_to(folder)} ({e})")
            continue
        rel = v.relative_to(folder).with_suffix("").as_posix()
        try:
            path = str(v.resolve().relative_to(base))
        except ValueError:
            path = str(v.resolve())
        for k, text in enumerate(caps):
            report.rows.append(ManifestRow(video_id=rel, path=path, text=text, text_id=f"{rel}#{k}", split=split,
                                           duration=round(duration, 3) if duration else None, source="folder"))
        report.videos += 1
    problems = report.problems()
    if problems and not allow_missing:
        raise FromFolderError(f"{folder} and {captions or 'the .txt captions'} do not match: " + "; ".join(problems)
                              + ". Fix them, or pass --allow-missing to write a manifest without these")
    if not report.rows:
        raise FromFolderError(f"no video of {folder} has a caption: nothing to write")
    return report
