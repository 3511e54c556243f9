"""Temporal grounding (moment retrieval), zero-shot, for every method.

Each video is cut into clips of ``eval.grounding.clip_seconds`` at the same stride (the last one ends at the
video's end); every clip is encoded once by the method's video side, as a video of its own (a long video in many
batches, never in one), and a candidate moment is a run of consecutive clips (up to ``eval.grounding.max_clips``; all by
default), scored by ``Method.moment_scores``. By default (zero-shot) each query is scored against each of its
video's clips by the method's own ``similarity`` (so fine-grained scores such as LocVTP's clip-word or DemoVLP's
region-word are used), and a moment from its clips' scores (``eval.grounding.score``):

- ``contrast`` (default): the mean score inside the moment minus the mean outside it, so a moment is rewarded for
  matching the query where the rest of the video does not (the whole video scores 0);
- ``mean``: the mean score inside (favours the single best clip).

``metrics.grounding_metrics`` then applies the field's conventions (greedy NMS at 0.5, strict IoU > m, mIoU of the
top-1 kept moment; docs/protocols.md). A method with a trained grounding head overrides ``moment_scores``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Optional, Sequence

from omegaconf import DictConfig

from vtp_bench.config import checked, choice, positive_int_or_none, positive_number
from vtp_bench.data.evalset import Clip, DropsVideos, unique_videos
from vtp_bench.data.manifest import ManifestError, ManifestRow, read_manifest
from vtp_bench.registry import TASKS
from vtp_bench.tasks.base import Column, EvalTask, Result, Scorer, TaskReport

if TYPE_CHECKING:
    from vtp_bench.methods.base import Embeddings


@dataclass
class GroundingConfig:
    # clips of this many seconds at the same stride; moments of up to max_clips clips (null: all)
    clip_seconds: float = checked(1.0, positive_number, "a finite number of seconds > 0")
    max_clips: Optional[int] = checked(None, positive_int_or_none, "null (all) or a positive integer")
    # (zero-shot) a moment's score: the method's similarity to each clip, inside minus outside mean (contrast) or
    # inside mean (mean); or the cosine of the query and the moment's mean clip embedding (pooled)
    score: str = choice("contrast", ("contrast", "mean", "pooled"))


def moments(windows: Sequence[tuple[float, float]], max_clips: int | None = None) -> list[tuple[int, int]]:
    """Every run of consecutive clips ``[i, j]`` (inclusive) of at most ``max_clips`` clips."""
    n = len(windows)
    longest = n if not max_clips else min(n, max_clips)
    return [(i, j) for i in range(n) for j in range(i, min(n, i + longest))]


@dataclass
class GroundingSet(DropsVideos):
    manifest: Path
    video_ids: list[str]
    video_paths: list[Path]
    durations: list[float]
    clip_seconds: float
    texts: list[str]
    text_ids: list[str]
    query_video: list[int]  # the video of each query
    gt: list[tuple[float, float]]  # each query's moment, seconds
    missing: list[str] = field(default_factory=list)
    rows: list[ManifestRow] = field(default_factory=list)

    per_video: ClassVar[tuple[str, ...]] = ("video_ids", "video_paths", "durations", "rows")
    per_query: ClassVar[tuple[str, ...]] = ("texts", "text_ids", "gt")
    video_of_query: ClassVar[str] = "query_video"

    @property
    def clips(self) -> list[Clip]:
        from vtp_bench.data.inputs import clip_windows  # the data side cuts training videos the same way

        return [Clip(i, p, s, e) for i, (p, d) in enumerate(zip(self.video_paths, self.durations))
                for s, e in clip_windows(d, self.clip_seconds)]


def _describe(rs: list[Result]) -> str:
    r = rs[0]
    chance = (r.get("chance") or {}).get("R@1,IoU=0.5")
    return (f"{r.get('num_queries')} queries in {r.get('num_videos')} videos, {r.get('clip_seconds')} s clips, "
            f"moments of up to {r.get('max_moment_clips') or 'all'} clips scored by {r.get('moment_score')}"
            + (f", chance R@1 IoU0.5 {chance:.1f}" if chance is not None else ""))


REPORT = TaskReport(
    label="grounding",
    columns=(Column("R@1,IoU=0.5", "R@1 IoU0.5"), Column("R@1,IoU=0.7", "R@1 IoU0.7"),
             Column("mIoU", "mIoU", proportion=False)),
    main="R@1,IoU=0.5",
    main_label="R@1, IoU 0.5 (%)",
    order=10,
    protocol={"num_queries": lambda r: r.get("num_queries"), "clip_seconds": lambda r: r.get("clip_seconds"),
              "max_moment_clips": lambda r: r.get("max_moment_clips"), "moment_score": lambda r: r.get("moment_score")},
    describe=_describe,
    chance=lambda r: (r.get("chance") or {}).get("R@1,IoU=0.5"),
)


@TASKS.register("grounding")
class Grounding(EvalTask):
    name = "grounding"
    Config = GroundingConfig
    headline = ("R@1,IoU=0.5", "R@1,IoU=0.7", "R@5,IoU=0.5", "mIoU")
    report = REPORT
    moved = {"grounding_clip_seconds": "clip_seconds", "grounding_max_clips": "max_clips", "grounding_score": "score"}

    def default_split(self, dataset: str) -> str:
        # synth: the held-out grounding videos (grounding_train / grounding_val are what a grounding head trains and
        # validates on; --split grounding scores all of them)
        return "grounding_test" if dataset == "synth" else "test"

    def load(self, manifest: Path, video_root: Path | None, allow_missing: bool, cfg: DictConfig,
             max_videos: int | None = None, check_videos: bool = True) -> GroundingSet:
        from vtp_bench.data.video import VideoReadError, probe_video

        rows = read_manifest(manifest)
        for r in rows:
            if r.start is None or r.end is None:
                raise ManifestError(f"{manifest}: row {r.text_id!r} lacks start/end; grounding needs each query's "
                                    "moment (a grounding manifest: data convert charades_sta / didemo_grounding / "
                                    "activitynet_grounding)")
        videos = unique_videos(rows, manifest, video_root, allow_missing, max_videos, check_videos)
        index = videos.index
        duration = {r.video_id: r.duration for r in rows if r.duration is not None}
        for vid, path in zip(videos.ids, videos.paths):  # no duration in the manifest (DiDeMo): the container's
            if vid not in duration:
                try:
                    duration[vid] = probe_video(path).duration
                except VideoReadError as e:
                    raise ManifestError(f"{manifest}: video {vid!r} has no duration in the manifest and {path} "
                                        f"cannot tell it ({e})") from None
        kept = [r for r in rows if r.video_id in index]
        return GroundingSet(manifest, videos.ids, videos.paths, [float(duration[v]) for v in videos.ids],
                            float(self.options(cfg).clip_seconds), [r.text for r in kept], [r.text_id for r in kept],
                            [index[r.video_id] for r in kept], [(float(r.start), float(r.end)) for r in kept],
                            videos.missing, videos.rows)

    def score(self, scorer: Scorer, clips: Embeddings, eset: GroundingSet, cfg: DictConfig
              ) -> tuple[dict[str, float], dict[str, Any]]:
        import math

        import torch

        from vtp_bench.data.inputs import clip_windows
        from vtp_bench.metrics import grounding_metrics
        from vtp_bench.metrics.grounding import moment_iou

        opts = self.options(cfg)
        text = scorer.encode_texts(eset.texts, cfg.data.eval_batch_size)
        per_video = [clip_windows(d, eset.clip_seconds) for d in eset.durations]
        first = [0]
        for w in per_video:
            first.append(first[-1] + len(w))
        spans = [moments(w, opts.max_clips) for w in per_video]
        k_max = max(len(s) for s in spans)
        q = len(eset.texts)
        cands = torch.zeros(q, k_max, 2, dtype=torch.float64)
        scores = torch.full((q, k_max), -math.inf, dtype=torch.float64)  # padding: ranked after every real moment
        queries_of: dict[int, list[int]] = {}
        for j, v in enumerate(eset.query_video):
            queries_of.setdefault(v, []).append(j)
        for v, qs in queries_of.items():
            device = scorer.device
            span_scores = scorer.method.moment_scores(
                text.index(torch.tensor(qs)).to(device), clips.index(slice(first[v], first[v + 1])).to(device),
                torch.tensor(spans[v], device=device), opts.score).double().cpu()
            w = per_video[v]
            bounds = torch.tensor([[w[i][0], w[j][1]] for i, j in spans[v]], dtype=torch.float64)
            for row, j in enumerate(qs):
                cands[j, : len(bounds)] = bounds
                scores[j, : len(bounds)] = span_scores[row]
        gt = torch.tensor(eset.gt, dtype=torch.float64)
        metrics, per_query = grounding_metrics(cands, scores, gt, return_per_query=True)
        # chance: a moment drawn uniformly from each query's candidates (the R@1 / mIoU of random scores)
        real = torch.isfinite(scores)
        iou = moment_iou(cands, gt[:, None, :])
        chance = {f"R@1,IoU={m}": 100.0 * float(((iou > m) & real).sum(1).div(real.sum(1)).mean())
                  for m in (0.1, 0.3, 0.5, 0.7)}
        chance["mIoU"] = 100.0 * float((iou * real).sum(1).div(real.sum(1)).mean())
        info = {"num_queries": q, "num_videos": len(eset.video_ids), "num_clips": first[-1],
                "clip_seconds": eset.clip_seconds, "max_moment_clips": opts.max_clips,
                "moment_score": opts.score, "candidates_per_video_max": k_max, "chance": chance,
                "per_query": {**per_query, "ids": list(eset.text_ids)}}
        return metrics, info
