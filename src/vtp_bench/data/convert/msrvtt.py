"""MSR-VTT: the 1k-A test csv (JSFusion split, one caption per video) and any split with all captions.

- ``msrvtt_1ka``: ``MSRVTT_JSFUSION_test.csv`` (header ``key,vid_key,video_id,sentence``): 1,000 videos x 1
  caption, the square test matrix of every method here (docs/protocols.md).
- ``msrvtt``: ``MSRVTT_data.json`` (CLIP4Clip/X-Pool: ``sentences[*].video_id/caption``) or FiT's
  ``MSR_VTT.json`` (``annotations[*].image_id/caption``) + a split list (``MSRVTT_train.9k.csv``,
  ``MSRVTT_train.7k.csv`` or a CE ``*_list_*.txt``): one row per caption of every listed video (~20 each).
"""

from __future__ import annotations

from pathlib import Path

from vtp_bench.data.convert.base import (
    Converted,
    ConvertError,
    bad_line,
    converter,
    read_csv_rows,
    read_id_list,
    read_json,
    split_from_name,
)
from vtp_bench.data.manifest import ManifestRow

SOURCE = "msrvtt"


@converter("msrvtt_1ka", inputs=("MSRVTT_JSFUSION_test.csv",))
def convert_1ka(inputs: list[Path], split: str | None) -> Converted:
    """MSR-VTT 1k-A test: 1,000 videos, one caption each (JSFusion csv)."""
    (path,) = inputs
    rows, seen = [], set()
    for lineno, r in read_csv_rows(path, required=("video_id", "sentence")):
        vid, text = r["video_id"].strip(), r["sentence"].strip()
        if not vid or not text:
            raise bad_line(path, lineno, "empty video_id or sentence", "key,vid_key,video_id,sentence")
        if vid in seen:
            raise bad_line(path, lineno, f"video {vid!r} appears twice", "one caption per video in the 1k-A csv")
        seen.add(vid)
        rows.append(ManifestRow(vid, f"{vid}.mp4", text, f"{vid}_0", split or "test", source=SOURCE))
    return Converted(rows)


def _captions(path: Path) -> dict[str, list[str]]:
    data = read_json(path)
    if isinstance(data, dict) and "sentences" in data:
        items, vkey = data["sentences"], "video_id"
    elif isinstance(data, dict) and "annotations" in data:
        items, vkey = data["annotations"], "image_id"
    else:
        raise ConvertError(f"{path}: expected MSRVTT_data.json (key 'sentences') or MSR_VTT.json (key "
                           f"'annotations'), found keys {sorted(data) if isinstance(data, dict) else type(data)}")
    captions: dict[str, list[str]] = {}
    for i, item in enumerate(items):
        try:
            captions.setdefault(str(item[vkey]), []).append(str(item["caption"]).strip())
        except (KeyError, TypeError):
            raise ConvertError(f"{path}: entry {i} lacks {vkey!r} or 'caption' ({str(item)[:80]})") from None
    return captions


@converter("msrvtt", inputs=("MSRVTT_data.json", "SPLIT_LIST"))
def convert_full(inputs: list[Path], split: str | None) -> Converted:
    """MSR-VTT with all captions of the videos in a split list (9k / 7k train, full split lists)."""
    captions_path, list_path = inputs
    captions = _captions(captions_path)
    ids = read_id_list(list_path)
    missing = [v for v in ids if v not in captions]
    if missing:
        raise ConvertError(f"{list_path}: {len(missing)} listed videos have no caption in {captions_path} "
                           f"(e.g. {missing[0]}); are the two files from the same release?")
    split = split_from_name(list_path, split, "train")
    rows = [ManifestRow(v, f"{v}.mp4", text, f"{v}_{k}", split, source=SOURCE)
            for v in ids for k, text in enumerate(captions[v])]
    return Converted(rows)
