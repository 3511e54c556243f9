"""Multiple-choice items (``tasks/multiple_choice.py``): a question is a video, its rows are the candidate captions
in order, the right one labelled ``answer``.

- ``msrvtt_mc``: JSFusion's ``MSR_MC_test.csv`` (tab-separated ``key``, ``vid_key``, ``video_id``, ``a1`` .. ``a5``,
  ``answer``): 2,990 test videos x 5 candidates; ``answer`` is the 0-based index of the right candidate (0 = a1),
  as the field's evaluation code compares it with the argmax over the five.
- ``mc_from_captions``: items built from any retrieval manifest (the synthetic dataset's ``test.jsonl``, say): each
  video's first caption is the answer, among ``CANDIDATES - 1`` first captions of other videos with other texts,
  drawn and placed by a generator seeded with the video id (the same items on every machine). The videos (and box
  files) are the source manifest's, resolved against it: no ``--video-root`` is needed, and the items may be
  written anywhere.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from vtp_bench.data.convert.base import Converted, ConvertError, bad_line, converter, read_csv_rows
from vtp_bench.data.manifest import ManifestRow, read_manifest, resolve_path

ANSWER = "answer"  # as tasks/multiple_choice.py reads it
CANDIDATES = 5  # MSR-VTT MC and LSMDC MC: five captions per video
MC_COLUMNS = ("key", "vid_key", "video_id", *(f"a{k}" for k in range(1, CANDIDATES + 1)), "answer")


def question_rows(video_id: str, path: str, key: str, texts: list[str], answer: int, split: str, source: str
                  ) -> list[ManifestRow]:
    """One row per candidate (text id ``<key>/a<k>``), the right one labelled ``answer``."""
    return [ManifestRow(video_id, path, text, f"{key}/a{k + 1}", split, label=ANSWER if k == answer else None,
                        source=source) for k, text in enumerate(texts)]


@converter("msrvtt_mc", inputs=("MSR_MC_test.csv",))
def convert_msrvtt_mc(inputs: list[Path], split: str | None) -> Converted:
    """MSR-VTT multiple choice: 2,990 videos x 5 candidate captions (JSFusion's tab-separated csv)."""
    (path,) = inputs
    expected = "\t".join(MC_COLUMNS)
    rows: list[ManifestRow] = []
    seen: set[str] = set()
    for lineno, r in read_csv_rows(path, delimiter="\t", required=MC_COLUMNS):
        vid, key = r["video_id"].strip(), r["key"].strip()
        texts = [r[f"a{k}"].strip() for k in range(1, CANDIDATES + 1)]
        if not vid or not key or not all(texts):
            raise bad_line(path, lineno, "an empty key, video_id or candidate", expected)
        try:
            answer = int(r["answer"])
        except ValueError:
            raise bad_line(path, lineno, f"answer {r['answer']!r} is not an integer", "0..4 (0 = a1)") from None
        if not 0 <= answer < CANDIDATES:
            raise bad_line(path, lineno, f"answer {answer} is not a candidate's index", "0..4 (0 = a1)")
        if vid in seen:
            raise bad_line(path, lineno, f"video {vid!r} has a second question", "one question per video")
        seen.add(vid)
        rows += question_rows(vid, f"{vid}.mp4", key, texts, answer, split or "mc_test", "msrvtt_mc")
    if not rows:
        raise ConvertError(f"{path}: no questions (only a header?)")
    return Converted(rows)


@converter("mc_from_captions", inputs=("manifest.jsonl",))
def convert_from_captions(inputs: list[Path], split: str | None) -> Converted:
    """Multiple-choice items from a retrieval manifest: each video's first caption among 4 others (seeded)."""
    (path,) = inputs
    first: dict[str, ManifestRow] = {}
    for r in read_manifest(path):
        first.setdefault(r.video_id, r)
    videos = list(first)
    dropped = []
    rows: list[ManifestRow] = []
    for vid in videos:
        own = first[vid].text
        others = sorted({first[v].text for v in videos if v != vid} - {own})
        if len(others) < CANDIDATES - 1:
            dropped.append(f"{path}: video {vid!r}: fewer than {CANDIDATES - 1} other captions differ from its own")
            continue
        rng = random.Random(f"mc:{vid}")
        texts = rng.sample(others, CANDIDATES - 1)
        answer = rng.randrange(CANDIDATES)
        texts.insert(answer, own)
        # the video's own fields (window, duration) as in the source, its files resolved against the source (kept
        # as they are by place_videos); the candidates as the task reads them
        src = first[vid]
        files = {"path": str(resolve_path(src.path, path).resolve()),
                 "boxes": str(resolve_path(src.boxes, path).resolve()) if src.boxes else None}
        rows += [replace(src, text=r.text, text_id=r.text_id, split=r.split, label=r.label, source=r.source, **files)
                 for r in question_rows(vid, src.path, f"mc_{vid}", texts, answer, split or "mc_test",
                                        "mc_from_captions")]
    if not rows:
        raise ConvertError(f"{path}: no video has {CANDIDATES - 1} other videos with other captions; "
                           f"multiple-choice items need at least {CANDIDATES} distinct captions")
    return Converted(rows, dropped)
