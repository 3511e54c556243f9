"""ActivityNet Captions (``train.json`` / ``val_1.json`` / ``val_2.json``: ``{video_id: {duration,
timestamps, sentences}}``).

- ``activitynet``: paragraph-to-video retrieval (CLIP4Clip's protocol: val_1 is the test set, 4,917 videos),
  the sentences of a video (leading spaces stripped) joined with spaces; the whole video.
- ``activitynet_grounding``: one row per sentence and its ``[start, end]`` seconds, the end clipped to the
  video's duration (134 val_1 moments end after it); a moment that is empty after clipping is dropped and
  reported. The grounding protocol (2D-TAN, which LocVTP follows) is the other way round: val_1 (2D-TAN's
  ``val.json``, 17,505 moments) is the validation set and val_2 (``test.json``, 17,031) the test set.
Videos are ``<video_id>.mp4`` (ids keep their ``v_`` prefix); ``--video-root`` finds other extensions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vtp_bench.data.convert.base import Converted, ConvertError, converter, read_json, split_from_name
from vtp_bench.data.manifest import ManifestRow


def _videos(path: Path) -> dict[str, dict[str, Any]]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise ConvertError(f"{path}: expected a JSON object {{video_id: {{duration, timestamps, sentences}}}}")
    for vid, v in data.items():
        if not isinstance(v, dict) or not {"duration", "timestamps", "sentences"} <= set(v):
            raise ConvertError(f"{path}: video {vid!r} lacks 'duration', 'timestamps' or 'sentences'")
        if len(v["timestamps"]) != len(v["sentences"]):
            raise ConvertError(f"{path}: video {vid!r} has {len(v['timestamps'])} timestamps for "
                               f"{len(v['sentences'])} sentences")
    return data


def _split(path: Path, split: str | None, grounding: bool) -> str:
    named = {"val_1": "val", "val_2": "test"} if grounding else {"val_1": "test", "val_2": "val"}
    return split or named.get(path.stem, split_from_name(path, None, "train"))


@converter("activitynet", inputs=("val_1.json",))
def convert_paragraph(inputs: list[Path], split: str | None) -> Converted:
    """ActivityNet Captions paragraph-to-video retrieval: one paragraph per video."""
    (path,) = inputs
    split = _split(path, split, grounding=False)
    rows = [ManifestRow(vid, f"{vid}.mp4", " ".join(str(s).strip() for s in v["sentences"]), f"{vid}_p", split,
                        duration=float(v["duration"]), source="activitynet")
            for vid, v in _videos(path).items()]
    return Converted(rows)


@converter("activitynet_grounding", inputs=("val_1.json",))
def convert_grounding(inputs: list[Path], split: str | None) -> Converted:
    """ActivityNet Captions dense-caption grounding: one query per sentence with its moment."""
    (path,) = inputs
    split = _split(path, split, grounding=True)
    rows, dropped = [], []
    for vid, v in _videos(path).items():
        duration = float(v["duration"])
        for k, ((start, end), text) in enumerate(zip(v["timestamps"], v["sentences"])):
            start, end = max(float(start), 0.0), min(float(end), duration)
            if not start < end:
                dropped.append(f"{path} {vid} sentence {k}: empty moment [{start}, {end}] after clipping to "
                               f"the duration {duration}")
                continue
            rows.append(ManifestRow(vid, f"{vid}.mp4", str(text).strip(), f"{vid}_{k}", split, start=start, end=end,
                                    duration=duration, source="activitynet"))
    return Converted(rows, dropped)
