"""MSVD: ``captions_msvd.json`` (``{clip_id: [caption, ...]}``, X-Pool / Prompt Switch) + a split list.

One row per caption: the test split has 670 videos and 27,763 captions, every caption a query
(multi-caption retrieval, docs/protocols.md). Videos are the YouTubeClips ``<clip_id>.avi``.
"""

from __future__ import annotations

from pathlib import Path

from vtp_bench.data.convert.base import Converted, ConvertError, converter, read_id_list, read_json, split_from_name
from vtp_bench.data.manifest import ManifestRow


@converter("msvd", inputs=("captions_msvd.json", "SPLIT_list.txt"))
def convert(inputs: list[Path], split: str | None) -> Converted:
    """MSVD: every caption of every video in the split list."""
    captions_path, list_path = inputs
    captions = read_json(captions_path)
    if not isinstance(captions, dict):
        raise ConvertError(f"{captions_path}: expected a JSON object {{clip_id: [captions]}}")
    split = split_from_name(list_path, split, "test")
    rows, dropped = [], []
    for vid in read_id_list(list_path):
        caps = captions.get(vid)
        if not caps or not isinstance(caps, list):
            raise ConvertError(f"{list_path}: video {vid!r} has no captions in {captions_path}")
        for k, text in enumerate(caps):
            if not str(text).strip():
                dropped.append(f"{captions_path} {vid}[{k}]: empty caption")
                continue
            rows.append(ManifestRow(vid, f"{vid}.avi", str(text).strip(), f"{vid}_{k}", split, source="msvd"))
    return Converted(rows, dropped)
