"""DiDeMo (LisaAnne/LocalizingMoments ``{split}_data.json`` + collaborative-experts ``{split}_list.txt``).

- ``didemo``: paragraph-to-video retrieval (docs/protocols.md): the descriptions of a video, in
  file order, joined with spaces into one query; one row per listed video (test: 1,004). As CLIP4Clip, a
  video is matched by its exact file name (27 test names end in ``.`` or have no extension), and its window
  is ``[0, 31)`` s: annotation stopped at 30 s, so frames are sampled there, not from the rest of longer
  videos.
- ``didemo_grounding``: one row per description with its moment. ``times`` holds one ``[first, last]`` pair
  of 5-second segment indices per annotator; the row takes the most frequent pair (the first annotator's
  among equally frequent ones) as ``[5 * first, 5 * (last + 1))`` seconds. LocalizingMoments' own evaluation
  scores against every annotator's pair (best 3 of 4), which one moment per row cannot express.

The split list (collaborative-experts' ``{split}_list.txt``, what CLIP4Clip reads) is optional: without it
every video of the JSON is converted (test: 1,037 videos, 4,021 queries); with it, the annotations of
unlisted videos are reported as dropped (test: 89 queries of 33 videos).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from vtp_bench.data.convert.base import Converted, ConvertError, converter, read_id_list, read_json, split_from_name
from vtp_bench.data.manifest import ManifestRow

SEGMENT_SECONDS = 5.0
PARAGRAPH_END = 31.0  # CLIP4Clip: "videos were truncated to 30 seconds during annotation"


def _annotations(path: Path) -> list[dict[str, Any]]:
    data = read_json(path)
    if not isinstance(data, list):
        raise ConvertError(f"{path}: expected a JSON list of annotations (LocalizingMoments *_data.json)")
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not {"video", "description", "times"} <= set(item):
            raise ConvertError(f"{path}: annotation {i} lacks 'video', 'description' or 'times': {str(item)[:100]}")
    return data


def _listed(inputs: list[Path], split: str | None
            ) -> tuple[list[str], dict[str, list[dict[str, Any]]], str, list[str]]:
    """The videos (listed, else all in file order), their annotations (file order), the split name, and a
    note on the annotations of unlisted videos."""
    data_path = inputs[0]
    by_video: dict[str, list[dict[str, Any]]] = {}
    for item in _annotations(data_path):
        by_video.setdefault(item["video"], []).append(item)
    if len(inputs) == 1:
        return list(by_video), by_video, split_from_name(data_path, split, "test"), []
    list_path = inputs[1]
    videos = read_id_list(list_path)
    missing = [v for v in videos if v not in by_video]
    if missing:
        raise ConvertError(f"{list_path}: {len(missing)} listed videos have no annotation in {data_path} "
                           f"(e.g. {missing[0]!r}); pass the *_data.json of the same split")
    unlisted = set(by_video) - set(videos)
    dropped = [f"{data_path}: {sum(len(by_video[v]) for v in unlisted)} annotations of {len(unlisted)} videos "
               f"not in {list_path.name}"] if unlisted else []
    return videos, by_video, split_from_name(list_path, split, "test"), dropped


@converter("didemo", inputs=("SPLIT_data.json", "SPLIT_list.txt"), optional_inputs=1)
def convert_paragraph(inputs: list[Path], split: str | None) -> Converted:
    """DiDeMo paragraph-to-video retrieval: one paragraph per video."""
    videos, by_video, split, dropped = _listed(inputs, split)
    rows = []
    for v in videos:
        text = " ".join(str(a["description"]).strip() for a in by_video[v])
        rows.append(ManifestRow(v, v, text, f"{v}_p", split, start=0.0, end=PARAGRAPH_END, source="didemo"))
    return Converted(rows, dropped)


def moment(times: list[list[int]], path: Path, annotation_id: Any) -> tuple[float, float]:
    pairs = [tuple(t) for t in times if isinstance(t, (list, tuple)) and len(t) == 2]
    if not pairs or len(pairs) != len(times) or any(not 0 <= a <= b for a, b in pairs):
        raise ConvertError(f"{path}: annotation {annotation_id}: 'times' {times!r} is not a list of "
                           f"[first, last] segment pairs with 0 <= first <= last")
    (first, last), _ = Counter(pairs).most_common(1)[0]
    return first * SEGMENT_SECONDS, (last + 1) * SEGMENT_SECONDS


@converter("didemo_grounding", inputs=("SPLIT_data.json", "SPLIT_list.txt"), optional_inputs=1)
def convert_grounding(inputs: list[Path], split: str | None) -> Converted:
    """DiDeMo moment localisation: one query per description, the annotators' most frequent moment."""
    videos, by_video, split, dropped = _listed(inputs, split)
    rows = []
    for v in videos:
        for k, a in enumerate(by_video[v]):
            start, end = moment(a["times"], inputs[0], a.get("annotation_id", f"#{k} of {v}"))
            rows.append(ManifestRow(v, v, str(a["description"]).strip(), f"{v}_{k}", split, start=start, end=end,
                                    source="didemo"))
    return Converted(rows, dropped)
