"""Multiple-choice video-to-text (the MSR-VTT MC and LSMDC MC benchmarks): each video comes with a few candidate
captions, one of them right; the method picks the candidate it scores highest against the video, zero-shot, with
its own ``similarity``. The metric is accuracy over the questions (percent).

Manifest: a question is a video; its rows are the candidates (in order) and the right one has ``label`` "answer"
(``data convert msrvtt_mc`` writes MSR_MC_test.csv so; ``mc_from_captions`` builds items from any retrieval
manifest, e.g. the synthetic dataset's test split). A tie at the top is counted at its expected value (1 / the
number of tied candidates when the answer is among them), as retrieval counts ties.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from omegaconf import DictConfig

from vtp_bench.data.evalset import Clip, DropsVideos, unique_videos
from vtp_bench.data.manifest import ManifestError, ManifestRow, read_manifest
from vtp_bench.registry import TASKS
from vtp_bench.tasks.base import Column, EvalTask, Result, Scorer, TaskReport, similarity

if TYPE_CHECKING:
    from vtp_bench.methods.base import Embeddings

ANSWER = "answer"  # the label of a question's right candidate
VIDEOS_PER_CALL = 32  # videos per similarity call: their candidates x these videos (bounded memory, little waste)


@dataclass
class MultipleChoiceSet(DropsVideos):
    manifest: Path
    video_ids: list[str]
    video_paths: list[Path]
    windows: list[tuple[float | None, float | None]]
    candidates: list[str]  # every candidate caption, grouped by video
    text_ids: list[str]
    candidate_video: list[int]  # the video (question) of each candidate
    is_answer: list[bool]
    missing: list[str] = field(default_factory=list)
    rows: list[ManifestRow] = field(default_factory=list)

    per_video: ClassVar[tuple[str, ...]] = ("video_ids", "video_paths", "windows", "rows")
    per_query: ClassVar[tuple[str, ...]] = ("candidates", "text_ids", "is_answer")
    video_of_query: ClassVar[str] = "candidate_video"

    @property
    def clips(self) -> list[Clip]:
        return [Clip(i, p, *w) for i, (p, w) in enumerate(zip(self.video_paths, self.windows))]


def check_questions(rows: list[ManifestRow], manifest: Path) -> None:
    """Every video has two or more candidates and exactly one answer."""
    by_video: dict[str, list[ManifestRow]] = {}
    for r in rows:
        by_video.setdefault(r.video_id, []).append(r)
    for vid, cands in by_video.items():
        answers = sum(r.label == ANSWER for r in cands)
        if len(cands) < 2 or answers != 1:
            raise ManifestError(
                f"{manifest}: video {vid!r} has {len(cands)} candidate(s) and {answers} answer(s); a multiple-choice "
                f"question is a video with two or more rows (its candidates), exactly one with label {ANSWER!r} "
                "(data convert msrvtt_mc / mc_from_captions write them so)")


def pick(scores: list[float], answer: int) -> float:
    """1 when the answer alone scores highest, 1/k when it ties with k - 1 others at the top, else 0."""
    top = max(scores)
    tied = [i for i, s in enumerate(scores) if s == top]
    return 1.0 / len(tied) if answer in tied else 0.0


def _describe(rs: list[Result]) -> str:
    r = rs[0]
    chance = r.get("chance_accuracy")
    return (f"{r.get('num_questions')} questions (videos), {r.get('num_candidates')} candidates in all"
            + (f", chance {chance:.1f}" if chance is not None else ""))


REPORT = TaskReport(
    label="multiple-choice",
    columns=(Column("accuracy", "MC acc"),),
    main="accuracy",
    main_label="multiple-choice accuracy (%)",
    order=30,
    protocol={"num_questions": lambda r: r.get("num_questions"), "num_candidates": lambda r: r.get("num_candidates")},
    describe=_describe,
    chance=lambda r: r.get("chance_accuracy"),
)


@TASKS.register("multiple_choice")
class MultipleChoice(EvalTask):
    name = "multiple_choice"
    headline = ("accuracy",)
    report = REPORT

    def default_split(self, dataset: str) -> str:
        return "mc_test"  # what `data convert msrvtt_mc` / `mc_from_captions --out <dataset>/mc_test.jsonl` writes

    def load(self, manifest: Path, video_root: Path | None, allow_missing: bool, cfg: DictConfig,
             max_videos: int | None = None, check_videos: bool = True) -> MultipleChoiceSet:
        rows = read_manifest(manifest)
        check_questions(rows, manifest)
        videos = unique_videos(rows, manifest, video_root, allow_missing, max_videos, check_videos)
        index = videos.index
        kept = [r for r in rows if r.video_id in index]
        return MultipleChoiceSet(manifest, videos.ids, videos.paths, videos.windows, [r.text for r in kept],
                                 [r.text_id for r in kept], [index[r.video_id] for r in kept],
                                 [r.label == ANSWER for r in kept], videos.missing, videos.rows)

    def score(self, scorer: Scorer, clips: Embeddings, eset: MultipleChoiceSet, cfg: DictConfig
              ) -> tuple[dict[str, float], dict[str, Any]]:
        import torch

        text = scorer.encode_texts(eset.candidates, cfg.data.eval_batch_size)
        of_video: list[list[int]] = [[] for _ in eset.video_ids]
        for j, v in enumerate(eset.candidate_video):
            of_video[v].append(j)
        outcome: list[float] = []
        for lo in range(0, len(of_video), VIDEOS_PER_CALL):
            chunk = range(lo, min(lo + VIDEOS_PER_CALL, len(of_video)))
            cands = [j for v in chunk for j in of_video[v]]
            sim = similarity(scorer, text.index(torch.tensor(cands)), clips.index(slice(chunk.start, chunk.stop)))
            row = 0
            for col, v in enumerate(chunk):
                scores = sim[row: row + len(of_video[v]), col].tolist()
                outcome.append(pick(scores, [eset.is_answer[j] for j in of_video[v]].index(True)))
                row += len(of_video[v])
        n = len(outcome)
        metrics = {"accuracy": 100.0 * sum(outcome) / n}
        info = {"num_questions": n, "num_videos": n, "num_candidates": len(eset.candidates),
                "chance_accuracy": 100.0 * sum(1.0 / len(c) for c in of_video) / n,
                "per_query": {"accuracy": [100.0 * o for o in outcome], "ids": list(eset.video_ids)}}
        return metrics, info
