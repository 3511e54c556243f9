"""Text-video retrieval: every caption against every video of the split (``metrics.retrieval_metrics``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vtp_bench.data.dataset import RetrievalSet
from vtp_bench.methods.base import Embeddings
from vtp_bench.metrics import retrieval_metrics
from vtp_bench.registry import TASKS
from vtp_bench.tasks.base import EvalTask, Scorer, similarity


@TASKS.register("retrieval")
class Retrieval(EvalTask):
    name = "retrieval"
    headline = ("t2v/R@1", "t2v/R@5", "t2v/R@10", "t2v/MedR", "v2t/R@1", "v2t/R@5")

    def load(self, manifest: Path, video_root: Path | None, allow_missing: bool, cfg: DictConfig,
             max_videos: int | None = None, check_videos: bool = True) -> RetrievalSet:
        return RetrievalSet.from_manifest(manifest, video_root, allow_missing, max_videos, check_videos)

    def score(self, scorer: Scorer, clips: Embeddings, eset: RetrievalSet, cfg: DictConfig
              ) -> tuple[dict[str, float], dict[str, Any]]:
        text = scorer.encode_texts(eset.texts, cfg.data.eval_batch_size)
        metrics = retrieval_metrics(similarity(scorer, text, clips), eset.text_to_video)
        info = {"num_queries": len(eset.texts), "num_videos": len(eset.video_ids)}
        return metrics, info
