"""Text-video retrieval: every caption against every video of the split (``metrics.retrieval_metrics``).

The default protocol is vtp_bench's (eval_protocols.md: expected-value ties, caption-wise v2t, every video of the
split). ``eval.protocol`` reproduces another codebase's counting, and ``eval.v2t`` / ``eval.exclude`` set single
choices; whatever is used is named in the results JSON (``protocol``), never a silent change of the default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vtp_bench.data.dataset import RetrievalSet
from vtp_bench.methods.base import Embeddings
from vtp_bench.metrics import retrieval_metrics
from vtp_bench.registry import TASKS
from vtp_bench.tasks.base import EvalTask, Scorer, similarity

# X-Pool and Prompt Switch rank videos for v2t by their best caption (group-wise), and their LSMDC loader skips
# one clip of the 1,000-clip test file, so they score 999 (specs/promptswitch.md §9-§10, eval_protocols.md §2.4)
PROTOCOLS: dict[str, dict[str, Any]] = {
    "vtp_bench": {"v2t": None, "exclude": []},
    "xpool": {"v2t": "group", "exclude": ["1012_Unbreakable_00.05.16.065-00.05.21.941"]},
}


def protocol(cfg: DictConfig) -> dict[str, Any]:
    """The retrieval protocol in force: the named preset, with ``eval.v2t`` / ``eval.exclude`` applied over it."""
    preset = PROTOCOLS[cfg.eval.protocol]
    v2t = preset["v2t"] or cfg.eval.v2t
    return {"name": cfg.eval.protocol, "v2t": v2t, "exclude": sorted(set(preset["exclude"]) | set(cfg.eval.exclude))}


@TASKS.register("retrieval")
class Retrieval(EvalTask):
    name = "retrieval"
    headline = ("t2v/R@1", "t2v/R@5", "t2v/R@10", "t2v/MedR", "v2t/R@1", "v2t/R@5")

    def load(self, manifest: Path, video_root: Path | None, allow_missing: bool, cfg: DictConfig,
             max_videos: int | None = None, check_videos: bool = True) -> RetrievalSet:
        rset = RetrievalSet.from_manifest(manifest, video_root, allow_missing, max_videos, check_videos)
        leave_out = set(protocol(cfg)["exclude"])
        excluded = [i for i, v in enumerate(rset.video_ids) if v in leave_out]
        if excluded:
            missing, names = rset.missing, [rset.video_ids[i] for i in excluded]
            rset = rset.drop_videos(excluded)
            rset.missing, rset.excluded = missing, names  # left out on purpose, not missing: under "protocol"
        return rset

    def score(self, scorer: Scorer, clips: Embeddings, eset: RetrievalSet, cfg: DictConfig
              ) -> tuple[dict[str, float], dict[str, Any]]:
        proto = protocol(cfg)
        text = scorer.encode_texts(eset.texts, cfg.data.eval_batch_size)
        metrics = retrieval_metrics(similarity(scorer, text, clips), eset.text_to_video, v2t_mode=proto["v2t"])
        info = {"num_queries": len(eset.texts), "num_videos": len(eset.video_ids),
                "protocol": {**proto, "excluded": eset.excluded}}
        return metrics, info
