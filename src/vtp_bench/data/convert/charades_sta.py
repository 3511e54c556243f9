"""Charades-STA (``charades_sta_{train,test}.txt``: ``<video> <start> <end>##<sentence>``), optionally with
Charades' ``Charades_v1_{split}.csv`` for the durations.

As 2D-TAN (the protocol LocVTP follows, docs/protocols.md), the end is clipped to the video's
``length`` when the csv is given, and a query whose start is not before its end is dropped (4 train
queries; reported with their lines). Test: 3,720 queries over 1,334 videos. Videos are ``<video>.mp4``.
"""

from __future__ import annotations

import re
from pathlib import Path

from vtp_bench.data.convert.base import (
    Converted,
    ConvertError,
    bad_line,
    converter,
    read_csv_rows,
    read_text_lines,
    split_from_name,
)
from vtp_bench.data.manifest import ManifestRow

LINE = re.compile(r"^(\S+) (\d+(?:\.\d*)?) (\d+(?:\.\d*)?)##(.*\S.*)$")
EXPECTED = "'<video_id> <start_s> <end_s>##<sentence>', e.g. '3MSZA 24.3 30.4##person turn a light on.'"


def durations(path: Path) -> dict[str, float]:
    out = {}
    for lineno, r in read_csv_rows(path, required=("id", "length")):
        try:
            out[r["id"]] = float(r["length"])
        except ValueError:
            raise bad_line(path, lineno, f"length {r['length']!r} is not a number", "seconds in 'length'") from None
    return out


@converter("charades_sta", inputs=("charades_sta_SPLIT.txt", "Charades_v1_SPLIT.csv"), optional_inputs=1)
def convert(inputs: list[Path], split: str | None) -> Converted:
    """Charades-STA temporal grounding queries."""
    path = inputs[0]
    lengths = durations(inputs[1]) if len(inputs) > 1 else {}
    split = split_from_name(path, split, "test")
    rows, dropped, counts = [], [], {}
    for lineno, line in read_text_lines(path):
        m = LINE.match(line.strip())
        if not m:
            raise bad_line(path, lineno, f"cannot parse {line[:80]!r}", EXPECTED)
        vid, start, end, text = m.group(1), float(m.group(2)), float(m.group(3)), m.group(4).strip()
        duration = None
        if lengths:
            if vid not in lengths:
                raise ConvertError(f"{path} line {lineno}: video {vid!r} is not in {inputs[1]}; pass the "
                                   f"Charades_v1 csv of the same split")
            duration = lengths[vid]
            end = min(end, duration)
        if not start < end:
            dropped.append(f"{path} line {lineno}: start {start} is not before end {end}")
            continue
        k = counts.get(vid, 0)
        counts[vid] = k + 1
        rows.append(ManifestRow(vid, f"{vid}.mp4", text, f"{vid}_{k}", split, start=start, end=end,
                                duration=duration if duration is not None and duration >= end else None,
                                source="charades_sta"))
    return Converted(rows, dropped)
