"""WebVid-2M / 10M (``results_2M_train.csv`` / ``results_2M_val.csv``: ``videoid, contentUrl, duration,
page_dir, name``). Videos are ``<page_dir>/<videoid>.mp4`` as the official download script and Frozen-in-Time
lay them out; ``duration`` (ISO 8601, ``PT00H00M11S``) becomes seconds.
"""

from __future__ import annotations

import re
from pathlib import Path

from vtp_bench.data.convert.base import Converted, bad_line, converter, read_csv_rows, split_from_name
from vtp_bench.data.manifest import ManifestRow

ISO_DURATION = re.compile(r"^P(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def iso_seconds(value: str) -> float | None:
    m = ISO_DURATION.match(value.strip())
    if not m or not any(m.groups()):
        return None
    h, mi, s = (float(x) if x else 0.0 for x in m.groups())
    return h * 3600 + mi * 60 + s


@converter("webvid", inputs=("results_2M_train.csv",))
def convert(inputs: list[Path], split: str | None) -> Converted:
    """WebVid video-caption pairs."""
    (path,) = inputs
    split = split_from_name(path, split, "train")
    rows, seen = [], set()
    for lineno, r in read_csv_rows(path, required=("videoid", "page_dir", "name")):
        vid, page, text = r["videoid"].strip(), r["page_dir"].strip(), r["name"].strip()
        if not vid or not page or not text:
            raise bad_line(path, lineno, "empty videoid, page_dir or name", "videoid,contentUrl,duration,page_dir,name")
        if vid in seen:
            raise bad_line(path, lineno, f"videoid {vid} appears twice", "one row per video")
        seen.add(vid)
        duration = iso_seconds(r["duration"]) if r.get("duration") else None
        if r.get("duration") and duration is None:
            raise bad_line(path, lineno, f"duration {r['duration']!r} is not ISO 8601", "e.g. PT00H00M11S")
        rows.append(ManifestRow(vid, f"{page}/{vid}.mp4", text, vid, split, duration=duration, source="webvid"))
    return Converted(rows)
