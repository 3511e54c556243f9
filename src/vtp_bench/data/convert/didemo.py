"""DiDeMo (LisaAnne/LocalizingMoments ``{split}_data.json`` + collaborative-experts ``{split}_list.txt``).

- ``didemo``: paragraph-to-video retrieval (specs/eval_protocols.md §2.5): the descriptions of a video, in
  file order, joined with spaces into one query; one row per listed video (test: 1,004). As CLIP4Clip, a
  video is matched by its exact file name (27 test names end in ``.`` or have no extension) and the whole
  video is used (no window).
- ``didemo_grounding``: one row per description with its moment. ``times`` holds one ``[first, last]`` pair
  of 5-second segment indices per annotator; the row takes the most frequent pair (the first annotator's
  among equally frequent ones) as ``[5 * first, 5 * (last + 1))`` seconds.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from vtp_bench.data.convert.base import ConvertError, Converted, converter, read_id_list, read_json, split_from_name
from vtp_bench.data.manifest import ManifestRow

SEGMENT_SECONDS = 5.0


def _annotations(path: Path) -> list[dict[str, Any]]:
    data = read_json(path)
    if not isinstance(data, list):
        raise ConvertError(f"{path}: expected a JSON list of annotations (LocalizingMoments *_data.json)")
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not {"video", "description", "times"} <= set(item):
            raise ConvertError(f"{path}: annotation {i} lacks 'video', 'description' or 'times': {str(item)[:100]}")
    return data


def _listed(inputs: list[Path], split: str | None) -> tuple[list[str], dict[str, list[dict[str, Any]]], str]:
    """The listed videos, their annotations (file order) and the split name."""
    data_path, list_path = inputs
    videos = read_id_list(list_path)
    by_video: dict[str, list[dict[str, Any]]] = {}
    for item in _annotations(data_path):
        by_video.setdefault(item["video"], []).append(item)
    missing = [v for v in videos if v not in by_video]
    if missing:
        raise ConvertError(f"{list_path}: {len(missing)} listed videos have no annotation in {data_path} "
                           f"(e.g. {missing[0]!r}); pass the *_data.json of the same split")
    return videos, by_video, split_from_name(list_path, split, "test")


@converter("didemo", inputs=("SPLIT_data.json", "SPLIT_list.txt"))
def convert_paragraph(inputs: list[Path], split: str | None) -> Converted:
    """DiDeMo paragraph-to-video retrieval: one paragraph per video."""
    videos, by_video, split = _listed(inputs, split)
    rows = []
    for v in videos:
        text = " ".join(str(a["description"]).strip() for a in by_video[v])
        rows.append(ManifestRow(v, v, text, f"{v}_p", split, source="didemo"))
    return Converted(rows)


def moment(times: list[list[int]], path: Path, annotation_id: Any) -> tuple[float, float]:
    pairs = [tuple(t) for t in times if isinstance(t, (list, tuple)) and len(t) == 2]
    if not pairs or len(pairs) != len(times) or any(not 0 <= a <= b for a, b in pairs):
        raise ConvertError(f"{path}: annotation {annotation_id}: 'times' {times!r} is not a list of "
                           f"[first, last] segment pairs with 0 <= first <= last")
    (first, last), _ = Counter(pairs).most_common(1)[0]
    return first * SEGMENT_SECONDS, (last + 1) * SEGMENT_SECONDS


@converter("didemo_grounding", inputs=("SPLIT_data.json", "SPLIT_list.txt"))
def convert_grounding(inputs: list[Path], split: str | None) -> Converted:
    """DiDeMo moment localisation: one query per description, the annotators' most frequent moment."""
    videos, by_video, split = _listed(inputs, split)
    rows = []
    for v in videos:
        for k, a in enumerate(by_video[v]):
            start, end = moment(a["times"], inputs[0], a.get("annotation_id", f"#{k} of {v}"))
            rows.append(ManifestRow(v, v, str(a["description"]).strip(), f"{v}_{k}", split, start=start, end=end,
                                    source="didemo"))
    return Converted(rows)
