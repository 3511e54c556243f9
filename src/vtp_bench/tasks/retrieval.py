"""Text-video retrieval: every caption against every video of the split (``metrics.retrieval_metrics``).

The default protocol is vtp_bench's (docs/protocols.md: expected-value ties, caption-wise v2t, every video of the
split). ``eval.retrieval.protocol`` reproduces another codebase's counting, and ``eval.retrieval.v2t`` /
``.exclude`` set single choices; whatever is used is named in the results JSON (``protocol``), never a silent
change of the default.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from omegaconf import DictConfig

from vtp_bench.config import checked, choice, positive_number
from vtp_bench.data.evalset import Clip, DropsVideos, unique_videos
from vtp_bench.data.manifest import ManifestRow, read_manifest
from vtp_bench.registry import TASKS
from vtp_bench.tasks.base import Column, EvalTask, Result, Scorer, TaskReport, similarity

if TYPE_CHECKING:
    from torch import Tensor

    from vtp_bench.methods.base import Embeddings

# X-Pool and Prompt Switch rank videos for v2t by their best caption (group-wise), and their LSMDC loader skips
# one clip of the 1,000-clip test file, so they score 999 (docs/protocols.md, LSMDC)
PROTOCOLS: dict[str, dict[str, Any]] = {
    "vtp_bench": {"v2t": None, "exclude": []},
    "xpool": {"v2t": "group", "exclude": ["1012_Unbreakable_00.05.16.065-00.05.21.941"]},
}
RERANKINGS = ("none", "dual_softmax", "qbnorm")


@dataclass
class RetrievalConfig:
    # video-to-text ranks a video's captions caption-wise (Frozen family) or group-wise (CLIP4Clip, X-Pool)
    v2t: str = choice("caption", ("caption", "group"), flag="--v2t",
                      help="video-to-text caption-wise (default, Frozen family) or group-wise (CLIP4Clip)")
    # another codebase's counting, named in the results JSON (PROTOCOLS): "xpool" = X-Pool / Prompt Switch
    # (group-wise v2t; LSMDC without the clip their loader skips)
    protocol: str = choice("vtp_bench", tuple(PROTOCOLS), flag="--protocol",
                           help="another codebase's counting (xpool: X-Pool / Prompt Switch), named in the JSON")
    exclude: list[str] = field(default_factory=list)  # video ids left out of the evaluation (recorded)
    # re-ranked metrics besides the raw ones (metrics_reranked; metrics/rerank.py): dual softmax (its temperature on
    # the cosine) or QB-Norm (a querybank of up to qbnorm_bank training captions, qbnorm_beta / _k; the bank from
    # qbnorm_bank_manifest, default the train.jsonl beside the evaluated manifest)
    rerank: str = choice("none", RERANKINGS, flag="--rerank",
                         help="also report re-ranked metrics (metrics_reranked; the raw ones stay primary): dual "
                              "softmax, or QB-Norm with a querybank of training captions (eval.retrieval.qbnorm_*)")
    rerank_temperature: float = checked(0.01, positive_number, "a finite number > 0")
    qbnorm_beta: float = 20.0
    qbnorm_k: int = 1
    qbnorm_bank: int = 5000
    qbnorm_bank_manifest: Optional[str] = None


@dataclass
class RetrievalSet(DropsVideos):
    """An evaluation split: unique videos (in first-appearance order) and all texts with their GT video."""

    manifest: Path
    video_ids: list[str]
    video_paths: list[Path]
    texts: list[str]
    text_ids: list[str]
    text_to_video: Tensor
    windows: list[tuple[float | None, float | None]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    rows: list[ManifestRow] = field(default_factory=list)  # each video's first row (its boxes, region files)
    excluded: list[str] = field(default_factory=list)  # videos left out on purpose (a protocol's exclusions)

    per_video: ClassVar[tuple[str, ...]] = ("video_ids", "video_paths", "windows", "rows")
    per_query: ClassVar[tuple[str, ...]] = ("texts", "text_ids")
    video_of_query: ClassVar[str] = "text_to_video"

    @classmethod
    def from_manifest(cls, manifest: Path, video_root: Path | None = None, allow_missing: bool = False,
                      max_videos: int | None = None, check_videos: bool = True) -> "RetrievalSet":
        """``check_videos=False`` when the method reads no pixels (region features): files are not looked up."""
        import torch

        rows = read_manifest(manifest)
        videos = unique_videos(rows, manifest, video_root, allow_missing, max_videos, check_videos)
        kept = [r for r in rows if r.video_id in videos.index]
        return cls(manifest, videos.ids, videos.paths, [r.text for r in kept], [r.text_id for r in kept],
                   torch.tensor([videos.index[r.video_id] for r in kept], dtype=torch.long), videos.windows,
                   videos.missing, videos.rows)

    @property
    def clips(self) -> list[Clip]:
        """One clip per video: the whole file, or the row's window (a segment of a longer video)."""
        return [Clip(i, p, *w) for i, (p, w) in enumerate(zip(self.video_paths, self.windows))]


def protocol(cfg: DictConfig) -> dict[str, Any]:
    """The retrieval protocol in force: the named preset, with ``v2t`` / ``exclude`` applied over it."""
    opts = Retrieval.options(cfg)
    preset = PROTOCOLS[opts.protocol]
    v2t = preset["v2t"] or opts.v2t
    return {"name": opts.protocol, "v2t": v2t, "exclude": sorted(set(preset["exclude"]) | set(opts.exclude))}


def _rerank_text(rr: dict[str, Any]) -> str:
    if rr.get("name") == "dual_softmax":
        return f"dual_softmax (S * softmax(S / {rr.get('temperature')}) over the other side; transductive)"
    if rr.get("name") == "qbnorm":
        return (f"qbnorm (dynamic inverted softmax, beta={rr.get('beta')}, k={rr.get('k')}, bank of "
                f"{rr.get('bank_size')} training captions; t2v only)")
    return str(rr.get("name"))


def _describe(rs: list[Result]) -> str:
    r = rs[0]
    p = r.get("protocol") or {}
    nq, nv = r.get("num_queries"), r.get("num_videos")
    per = f"{nq / nv:.3g} caption(s) per video" if nq and nv else "captions per video unknown"
    excluded = len(p.get("excluded") or [])
    what = (f"{nq} queries x {nv} videos ({per}; every caption is a t2v query; v2t {p.get('v2t', '?')}-wise), "
            f"protocol {p.get('name', 'vtp_bench')}" + (f", {excluded} videos excluded by it" if excluded else ""))
    reranks = sorted({_rerank_text((x.get("protocol") or {}).get("rerank") or {})
                      for x in rs if x.get("metrics_reranked")})
    return what + "; re-ranking: none (raw scores)" + (f"; extra rows re-ranked with {', '.join(reranks)}"
                                                      if reranks else "")


def _proto(key: str) -> Any:
    return lambda r: (r.get("protocol") or {}).get(key)


def _columns(direction: str) -> tuple[Column, ...]:
    """R@1, R@5, R@10 (percent of the queries) and MedR (the median of the per-query ranks, lower is better)."""
    recalls = tuple(Column(f"{direction}/R@{k}", f"{direction} R@{k}") for k in (1, 5, 10))
    return recalls + (Column(f"{direction}/MedR", f"{direction} MedR", lower_is_better=True, proportion=False,
                             unit="rank", items=f"{direction}/rank", statistic="median"),)


REPORT = TaskReport(
    label="retrieval",
    columns=_columns("t2v") + _columns("v2t"),
    main="t2v/R@1",
    main_label="text-to-video R@1 (%)",
    order=0,
    protocol={"num_queries": lambda r: r.get("num_queries"), "protocol": _proto("name"), "v2t": _proto("v2t"),
              "excluded": lambda r: len((r.get("protocol") or {}).get("excluded") or [])},
    describe=_describe,
    chance=lambda r: 100.0 / r["num_videos"] if r.get("num_videos") else None,
)


@TASKS.register("retrieval")
class Retrieval(EvalTask):
    name = "retrieval"
    Config = RetrievalConfig
    headline = ("t2v/R@1", "t2v/R@5", "t2v/R@10", "t2v/MedR", "v2t/R@1", "v2t/R@5")
    report = REPORT
    # eval.<key> of earlier versions -> eval.retrieval.<key>
    moved = {k: k for k in ("v2t", "protocol", "exclude", "rerank", "rerank_temperature", "qbnorm_beta", "qbnorm_k",
                            "qbnorm_bank", "qbnorm_bank_manifest")}

    def load(self, manifest: Path, video_root: Path | None, allow_missing: bool, cfg: DictConfig,
             max_videos: int | None = None, check_videos: bool = True) -> RetrievalSet:
        rset = RetrievalSet.from_manifest(manifest, video_root, allow_missing, max_videos, check_videos)
        leave_out = set(protocol(cfg)["exclude"])
        excluded = [i for i, v in enumerate(rset.video_ids) if v in leave_out]
        unknown = sorted(set(self.options(cfg).exclude) - set(rset.video_ids) - set(rset.missing))
        if unknown:  # a typo would silently exclude nothing
            print(f"warning: eval.retrieval.exclude names {len(unknown)} video id(s) that {manifest} does not hold "
                  f"(e.g. {unknown[0]!r}); nothing is left out for them", file=sys.stderr)
        if excluded:
            missing, names = rset.missing, [rset.video_ids[i] for i in excluded]
            rset = rset.drop_videos(excluded)
            rset.missing, rset.excluded = missing, names  # left out on purpose, not missing: under "protocol"
        return rset

    def score(self, scorer: Scorer, clips: Embeddings, eset: RetrievalSet, cfg: DictConfig
              ) -> tuple[dict[str, float], dict[str, Any]]:
        from vtp_bench.metrics import retrieval_metrics

        proto, opts = protocol(cfg), self.options(cfg)
        text = scorer.encode_texts(eset.texts, cfg.data.eval_batch_size)
        sim = similarity(scorer, text, clips)
        metrics, per_query = retrieval_metrics(sim, eset.text_to_video, v2t_mode=proto["v2t"], return_per_query=True)
        per_query.update({"t2v/ids": list(eset.text_ids), "v2t/ids": list(eset.video_ids)})
        info = {"num_queries": len(eset.texts), "num_videos": len(eset.video_ids),
                "protocol": {**proto, "excluded": eset.excluded, "rerank": {"name": opts.rerank}},
                "per_query": per_query}
        if opts.rerank != "none":  # an extra: the raw metrics stay "metrics"
            info["metrics_reranked"], info["protocol"]["rerank"] = rerank_metrics(scorer, clips, sim, eset, cfg)
        return metrics, info


def qbnorm_bank_texts(eset: RetrievalSet, cfg: DictConfig) -> tuple[Path, list[str]]:
    """Up to ``qbnorm_bank`` training captions, evenly spaced over the bank manifest (deterministic)."""
    from vtp_bench.data.catalog import DataNotFoundError

    opts = Retrieval.options(cfg)
    path = Path(opts.qbnorm_bank_manifest or Path(eset.manifest).parent / "train.jsonl")
    if not path.is_file():
        raise DataNotFoundError(f"QB-Norm querybank: {path} does not exist (the training captions of the dataset); "
                                "give one with eval.retrieval.qbnorm_bank_manifest=PATH.jsonl")
    texts = [r.text for r in read_manifest(path)]
    n = min(opts.qbnorm_bank, len(texts))
    if n < 1:
        raise DataNotFoundError(f"QB-Norm querybank: no captions (eval.retrieval.qbnorm_bank={opts.qbnorm_bank}, "
                                f"{path})")
    return path, [texts[i * len(texts) // n] for i in range(n)]


def rerank_metrics(scorer: Scorer, clips: Embeddings, sim: Any, eset: RetrievalSet, cfg: DictConfig
                   ) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics of the re-ranked matrix and the re-ranking's description (name, parameters, bank). Dual softmax
    re-ranks both directions (each with its own prior); QB-Norm re-ranks text-to-video only (its rows)."""
    from vtp_bench.metrics import retrieval_metrics
    from vtp_bench.metrics.rerank import dual_softmax, qbnorm

    v2t, opts = protocol(cfg)["v2t"], Retrieval.options(cfg)
    if opts.rerank == "dual_softmax":
        tau = opts.rerank_temperature
        t2v = retrieval_metrics(dual_softmax(sim, tau, dim=0), eset.text_to_video, v2t_mode=v2t)
        v2t_m = retrieval_metrics(dual_softmax(sim, tau, dim=1), eset.text_to_video, v2t_mode=v2t)
        metrics = {**{k: v for k, v in t2v.items() if k.startswith("t2v/")},
                   **{k: v for k, v in v2t_m.items() if k.startswith("v2t/")}}
        return metrics, {"name": "dual_softmax", "temperature": tau, "transductive": True}
    path, bank = qbnorm_bank_texts(eset, cfg)
    bank_sim = similarity(scorer, scorer.encode_texts(bank, cfg.data.eval_batch_size), clips)
    normed = qbnorm(sim, bank_sim, opts.qbnorm_beta, opts.qbnorm_k)
    metrics = {k: v for k, v in retrieval_metrics(normed, eset.text_to_video, v2t_mode=v2t).items()
               if k.startswith("t2v/")}
    return metrics, {"name": "qbnorm", "beta": opts.qbnorm_beta, "k": opts.qbnorm_k, "bank_size": len(bank),
                     "bank_manifest": str(path), "applies_to": "t2v"}
