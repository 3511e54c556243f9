"""LSMDC 2016: the tab-separated challenge files (``clip_id, start_aligned, end_aligned, start_extracted,
end_extracted, sentence``, no header), e.g. ``LSMDC16_challenge_1000_publictect.csv`` (the 1k test set) or
``LSMDC16_annos_training.csv``.

Clips are files ``<movie>/<clip_id>.avi`` where ``movie`` is the clip id up to its last ``_``. All 1,000 test
clips are kept; X-Pool and Prompt Switch drop ``1012_Unbreakable_00.05.16.065-00.05.21.941`` and score 999
(docs/protocols.md) — to reproduce that, remove the row from the manifest.
"""

from __future__ import annotations

from pathlib import Path

from vtp_bench.data.convert.base import Converted, bad_line, converter, read_text_lines, split_from_name
from vtp_bench.data.manifest import ManifestRow

EXPECTED = "6 tab-separated fields: clip_id, start_aligned, end_aligned, start_extracted, end_extracted, sentence"


@converter("lsmdc", inputs=("LSMDC16_*.csv",))
def convert(inputs: list[Path], split: str | None) -> Converted:
    """LSMDC 2016 clips with their one sentence each."""
    (path,) = inputs
    split = "test" if split is None and "publictect" in path.name.lower() else split_from_name(path, split, "train")
    rows, seen = [], {}
    for lineno, line in read_text_lines(path):
        fields = line.split("\t")
        if len(fields) != 6 or not fields[0].strip() or not fields[5].strip():
            raise bad_line(path, lineno, f"{len(fields)} field(s)", EXPECTED)
        clip = fields[0].strip()
        k = seen.get(clip, 0)
        seen[clip] = k + 1
        movie = clip.rsplit("_", 1)[0]
        rows.append(ManifestRow(clip, f"{movie}/{clip}.avi", fields[5].strip(), f"{clip}_{k}", split, source="lsmdc"))
    return Converted(rows)
