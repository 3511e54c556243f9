"""Zero-shot classification (action recognition as video-to-text retrieval, as MCQ / MILES evaluate HMDB51 and
UCF101): each class name becomes a text through a prompt template, and each video is ranked against the classes
(``metrics.zeroshot_metrics``: top-1, top-5, mean per-class accuracy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from omegaconf import DictConfig

from vtp_bench.config import checked
from vtp_bench.data.classes import ClassList, read_classes
from vtp_bench.data.evalset import Clip, DropsVideos, unique_videos
from vtp_bench.data.manifest import ManifestError, ManifestRow, read_manifest
from vtp_bench.registry import TASKS
from vtp_bench.tasks.base import Column, EvalTask, Result, Scorer, TaskReport, similarity

if TYPE_CHECKING:
    from vtp_bench.methods.base import Embeddings


@dataclass
class ZeroShotConfig:
    # class names become texts through this template ("{}" = the name); null: the dataset's own (the synthetic
    # classes.json has "an object {}"), else metrics.classification.PROMPT_TEMPLATE
    prompt_template: Optional[str] = checked(
        None, lambda v: v is None or (isinstance(v, str) and v.count("{}") == 1),
        "null or a text with exactly one {} (the class name), e.g. 'a video of {}'")


@dataclass
class ClassificationSet(DropsVideos):
    manifest: Path
    video_ids: list[str]
    video_paths: list[Path]
    windows: list[tuple[float | None, float | None]]
    labels: list[int]  # class index of each video
    classes: ClassList
    missing: list[str] = field(default_factory=list)
    rows: list[ManifestRow] = field(default_factory=list)

    per_video: ClassVar[tuple[str, ...]] = ("video_ids", "video_paths", "windows", "labels", "rows")

    @property
    def clips(self) -> list[Clip]:
        return [Clip(i, p, *w) for i, (p, w) in enumerate(zip(self.video_paths, self.windows))]


def prompt_template(cfg: DictConfig, classes: ClassList) -> str:
    from vtp_bench.metrics.classification import PROMPT_TEMPLATE

    return ZeroShotClassification.options(cfg).prompt_template or classes.template or PROMPT_TEMPLATE


def _describe(rs: list[Result]) -> str:
    r, chance = rs[0], rs[0].get("chance_top1")
    return (f"{r.get('num_videos')} videos, {r.get('num_classes')} classes, prompt {r.get('prompt_template')!r}"
            + (f", chance top-1 {chance:.1f}" if chance is not None else ""))


REPORT = TaskReport(
    label="zero-shot",
    columns=(Column("top1", "top-1"),),
    main="top1",
    main_label="top-1 (%)",
    order=20,
    protocol={"num_classes": lambda r: r.get("num_classes"), "prompt_template": lambda r: r.get("prompt_template")},
    describe=_describe,
    chance=lambda r: r.get("chance_top1"),
)


@TASKS.register("zeroshot_cls")
class ZeroShotClassification(EvalTask):
    name = "zeroshot_cls"
    Config = ZeroShotConfig
    headline = ("top1", "top5", "mean_class_acc")
    report = REPORT
    moved = {"prompt_template": "prompt_template"}

    def load(self, manifest: Path, video_root: Path | None, allow_missing: bool, cfg: DictConfig,
             max_videos: int | None = None, check_videos: bool = True) -> ClassificationSet:
        rows = read_manifest(manifest)
        classes = read_classes(manifest, rows)
        videos = unique_videos(rows, manifest, video_root, allow_missing, max_videos, check_videos)
        index = dict(zip((r.text_id for r in rows), classes.index(rows)))
        label: dict[str, int] = {}
        for r in rows:
            if r.video_id in videos.index and label.setdefault(r.video_id, index[r.text_id]) != index[r.text_id]:
                raise ManifestError(f"{manifest}: video {r.video_id!r} has rows of two classes "
                                    f"({classes.labels[label[r.video_id]]!r}, {r.label!r}); a video has one class")
        return ClassificationSet(manifest, videos.ids, videos.paths, videos.windows,
                                 [label[v] for v in videos.ids], classes, videos.missing, videos.rows)

    def score(self, scorer: Scorer, clips: Embeddings, eset: ClassificationSet, cfg: DictConfig
              ) -> tuple[dict[str, float], dict[str, Any]]:
        from vtp_bench.metrics import zeroshot_metrics
        from vtp_bench.metrics.classification import class_prompts

        template = prompt_template(cfg, eset.classes)
        prompts = class_prompts(eset.classes.names, template)
        text = scorer.encode_texts(prompts, cfg.data.eval_batch_size)
        metrics, per_query = zeroshot_metrics(similarity(scorer, text, clips).t(), eset.labels, return_per_query=True)
        info = {"num_videos": len(eset.video_ids), "num_classes": len(prompts), "prompt_template": template,
                "chance_top1": 100.0 / len(prompts), "per_query": {**per_query, "ids": list(eset.video_ids)}}
        return metrics, info
