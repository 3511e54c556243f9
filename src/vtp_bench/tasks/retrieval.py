"""Text-video retrieval: every caption against every video of the split (``metrics.retrieval_metrics``).

The default protocol is vtp_bench's (eval_protocols.md: expected-value ties, caption-wise v2t, every video of the
split). ``eval.protocol`` reproduces another codebase's counting, and ``eval.v2t`` / ``eval.exclude`` set single
choices; whatever is used is named in the results JSON (``protocol``), never a silent change of the default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vtp_bench.data.catalog import DataNotFoundError
from vtp_bench.data.dataset import RetrievalSet
from vtp_bench.data.manifest import read_manifest
from vtp_bench.methods.base import Embeddings
from vtp_bench.metrics import retrieval_metrics
from vtp_bench.metrics.rerank import dual_softmax, qbnorm
from vtp_bench.registry import TASKS
from vtp_bench.tasks.base import EvalTask, Scorer, similarity

# X-Pool and Prompt Switch rank videos for v2t by their best caption (group-wise), and their LSMDC loader skips
# one clip of the 1,000-clip test file, so they score 999 (docs/protocols.md, LSMDC)
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
        unknown = sorted(set(cfg.eval.exclude) - set(rset.video_ids) - set(rset.missing))
        if unknown:  # a typo would silently exclude nothing
            import sys

            print(f"warning: eval.exclude names {len(unknown)} video id(s) that {manifest} does not hold "
                  f"(e.g. {unknown[0]!r}); nothing is left out for them", file=sys.stderr)
        if excluded:
            missing, names = rset.missing, [rset.video_ids[i] for i in excluded]
            rset = rset.drop_videos(excluded)
            rset.missing, rset.excluded = missing, names  # left out on purpose, not missing: under "protocol"
        return rset

    def score(self, scorer: Scorer, clips: Embeddings, eset: RetrievalSet, cfg: DictConfig
              ) -> tuple[dict[str, float], dict[str, Any]]:
        proto = protocol(cfg)
        text = scorer.encode_texts(eset.texts, cfg.data.eval_batch_size)
        sim = similarity(scorer, text, clips)
        metrics, per_query = retrieval_metrics(sim, eset.text_to_video, v2t_mode=proto["v2t"], return_per_query=True)
        per_query.update({"t2v/ids": list(eset.text_ids), "v2t/ids": list(eset.video_ids)})
        info = {"num_queries": len(eset.texts), "num_videos": len(eset.video_ids),
                "protocol": {**proto, "excluded": eset.excluded, "rerank": {"name": cfg.eval.rerank}},
                "per_query": per_query}
        if cfg.eval.rerank != "none":  # an extra: the raw metrics stay "metrics"
            info["metrics_reranked"], info["protocol"]["rerank"] = rerank_metrics(scorer, clips, sim, eset, cfg)
        return metrics, info


def qbnorm_bank_texts(eset: RetrievalSet, cfg: DictConfig) -> tuple[Path, list[str]]:
    """Up to ``eval.qbnorm_bank`` training captions, evenly spaced over the bank manifest (deterministic)."""
    path = Path(cfg.eval.qbnorm_bank_manifest or Path(eset.manifest).parent / "train.jsonl")
    if not path.is_file():
        raise DataNotFoundError(f"QB-Norm querybank: {path} does not exist (the training captions of the dataset); "
                                "give one with eval.qbnorm_bank_manifest=PATH.jsonl")
    texts = [r.text for r in read_manifest(path)]
    n = min(cfg.eval.qbnorm_bank, len(texts))
    if n < 1:
        raise DataNotFoundError(f"QB-Norm querybank: no captions (eval.qbnorm_bank={cfg.eval.qbnorm_bank}, {path})")
    return path, [texts[i * len(texts) // n] for i in range(n)]


def rerank_metrics(scorer: Scorer, clips: Embeddings, sim: Any, eset: RetrievalSet, cfg: DictConfig
                   ) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics of the re-ranked matrix and the re-ranking's description (name, parameters, bank). Dual softmax
    re-ranks both directions (each with its own prior); QB-Norm re-ranks text-to-video only (its rows)."""
    v2t = protocol(cfg)["v2t"]
    if cfg.eval.rerank == "dual_softmax":
        tau = cfg.eval.rerank_temperature
        t2v = retrieval_metrics(dual_softmax(sim, tau, dim=0), eset.text_to_video, v2t_mode=v2t)
        v2t_m = retrieval_metrics(dual_softmax(sim, tau, dim=1), eset.text_to_video, v2t_mode=v2t)
        metrics = {**{k: v for k, v in t2v.items() if k.startswith("t2v/")},
                   **{k: v for k, v in v2t_m.items() if k.startswith("v2t/")}}
        return metrics, {"name": "dual_softmax", "temperature": tau, "transductive": True}
    path, bank = qbnorm_bank_texts(eset, cfg)
    bank_sim = similarity(scorer, scorer.encode_texts(bank, cfg.data.eval_batch_size), clips)
    normed = qbnorm(sim, bank_sim, cfg.eval.qbnorm_beta, cfg.eval.qbnorm_k)
    metrics = {k: v for k, v in retrieval_metrics(normed, eset.text_to_video, v2t_mode=v2t).items()
               if k.startswith("t2v/")}
    return metrics, {"name": "qbnorm", "beta": cfg.eval.qbnorm_beta, "k": cfg.eval.qbnorm_k, "bank_size": len(bank),
                     "bank_manifest": str(path), "applies_to": "t2v"}
