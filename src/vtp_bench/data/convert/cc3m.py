"""Conceptual Captions 3M (Frozen-in-Time's ``cc3m_{training,validation}_success_full.tsv``: caption, file).

Images become 1-frame videos: the reader decodes a JPEG/PNG as one frame and the loader pads and masks it
to ``num_frames`` (Frozen pads images with zero frames the same way). Files are ``training/<file>`` or
``validation/<file>`` as in Frozen's download layout. A first line whose first field is ``caption`` is the
header (pandas' reading in the official code).
"""

from __future__ import annotations

from pathlib import Path

from vtp_bench.data.convert.base import Converted, bad_line, converter, read_text_lines, split_from_name
from vtp_bench.data.manifest import ManifestRow


@converter("cc3m", inputs=("cc3m_training_success_full.tsv",))
def convert(inputs: list[Path], split: str | None) -> Converted:
    """CC3M image-caption pairs as 1-frame videos."""
    (path,) = inputs
    split = split_from_name(path, split, "train")
    folder = "training" if split == "train" else "validation"
    rows, seen = [], set()
    for lineno, line in read_text_lines(path):
        fields = line.split("\t")
        if lineno == 1 and fields[0].strip().lower() == "caption":
            continue
        if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
            raise bad_line(path, lineno, f"{len(fields)} tab-separated field(s)", "caption<TAB>file")
        text, name = fields[0].strip(), fields[1].strip()
        if name in seen:
            raise bad_line(path, lineno, f"file {name!r} appears twice", "one row per image")
        seen.add(name)
        rows.append(ManifestRow(name.rsplit(".", 1)[0], f"{folder}/{name}", text, name, split, source="cc3m"))
    return Converted(rows)
