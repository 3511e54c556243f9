"""Temporal grounding metrics: "R@n, IoU=m" after greedy NMS, and mIoU, as the field computes them.

Conventions (docs/protocols.md, "Temporal grounding"; LocVTP ``clip/data/datasets/evaluation.py`` and
2D-TAN ``lib/core/eval.py`` agree on all of them):

- per query, candidates are ranked by score, highest first; equal scores keep their input order (a stable
  sort: 2D-TAN trusts the order it is given, LocVTP's ``sort`` leaves the order of ties unspecified);
- greedy NMS: walking down the ranking, a candidate is dropped when its IoU with an already *kept* one is
  ``> nms_thresh``, so an IoU exactly at the threshold keeps it;
- a query counts for "R@n, IoU=m" when one of its first n kept moments has IoU ``> m`` with the ground truth
  (strict, so an IoU exactly at m is a miss); a query with fewer than n kept moments uses those it has;
- IoU = ``max(0, min(e1, e2) - max(s1, s2)) / (max(e1, e2) - min(s1, s2))`` (the span of both moments as the
  denominator, equal to the union whenever they overlap); moments are not clipped to the video;
- mIoU (2D-TAN's; LocVTP computes none) = mean over queries of the IoU of the top-1 kept moment.

Everything is computed in float64 (inputs are converted exactly), so ties at a threshold are decided on the
values given, e.g. ``[0, 1]`` against ``[0, 2]`` is exactly 0.5. A moment pair whose span has no length (two
identical points) has IoU 0 here; the official codes produce 0/0 there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["grounding_metrics", "moment_iou"]

_CHUNK_ELEMENTS = 4_000_000  # queries are processed in chunks of about this many candidates


def moment_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of moments ``a`` [..., 2] and ``b`` [..., 2] (broadcast), as above."""
    inter = (torch.minimum(a[..., 1], b[..., 1]) - torch.maximum(a[..., 0], b[..., 0])).clamp_min(0)
    span = torch.maximum(a[..., 1], b[..., 1]) - torch.minimum(a[..., 0], b[..., 0])
    return torch.where(span > 0, inter / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(span))


def _check(candidates: Tensor, scores: Tensor, gt: Tensor, recalls: Sequence[int]) -> None:
    if candidates.ndim != 3 or candidates.shape[-1] != 2:
        raise ValueError(f"candidates must be [Q, K, 2] (start, end seconds), got {tuple(candidates.shape)}")
    q, k = candidates.shape[:2]
    if tuple(scores.shape) != (q, k):
        raise ValueError(f"scores must be [Q, K] = {(q, k)} to match candidates, got {tuple(scores.shape)}")
    if tuple(gt.shape) != (q, 2):
        raise ValueError(f"gt must be [Q, 2] = {(q, 2)} (one start, end per query), got {tuple(gt.shape)}")
    if q == 0 or k == 0:
        raise ValueError(f"need at least one query and one candidate, got Q={q}, K={k}")
    if torch.isnan(scores).any() or torch.isnan(candidates).any() or torch.isnan(gt).any():
        raise ValueError("grounding inputs contain NaN (candidates, scores or gt)")
    if not recalls or any(int(r) < 1 for r in recalls):
        raise ValueError(f"recalls must be positive integers, got {list(recalls)}")


# ranked candidates NMS looks at first, then again for the queries that kept fewer than ``top`` there
_PREFIXES = (16, 128)


def _greedy(ranked: Tensor, nms_thresh: float, top: int) -> tuple[Tensor, Tensor]:
    """Greedy NMS over candidates already ranked best first, [Q, K, 2]: the first ``top`` kept moments
    [Q, top, 2] and a validity mask [Q, top]; ``top`` rounds, each over all queries."""
    q, k = ranked.shape[:2]
    alive = torch.ones(q, k, dtype=torch.bool)
    kept = torch.zeros(q, top, 2, dtype=torch.float64)
    valid = torch.zeros(q, top, dtype=torch.bool)
    rows = torch.arange(q)
    for n in range(top):
        has = alive.any(dim=1)
        first = torch.where(has, alive.to(torch.int8).argmax(dim=1), torch.zeros_like(rows))
        pick = ranked[rows, first]  # [Q, 2]
        kept[:, n] = pick
        valid[:, n] = has
        alive[rows, first] = False
        alive &= ~(moment_iou(ranked, pick[:, None, :]) > nms_thresh) | ~has[:, None]
    return kept, valid


def _nms_top(cands: Tensor, scores: Tensor, nms_thresh: float, top: int) -> tuple[Tensor, Tensor]:
    """The first ``top`` kept moments per query of greedy NMS: [Q, top, 2] and a validity mask [Q, top].

    Greedy NMS keeps the best remaining candidate and drops those overlapping it by more than the threshold,
    so its first picks depend only on the candidates ranked above them: NMS over the first W ranked candidates
    gives the same picks as over all of them wherever it finds ``top`` there. W grows through ``_PREFIXES``, then
    all candidates, for the queries still short of ``top`` (most need few: the work follows the hard ones).
    """
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    ranked = torch.gather(cands, 1, order[..., None].expand(-1, -1, 2))
    q, k = scores.shape
    kept = torch.zeros(q, top, 2, dtype=torch.float64)
    valid = torch.zeros(q, top, dtype=torch.bool)
    todo = torch.arange(q)
    for w in [p for p in _PREFIXES if p < k] + [k]:
        kept[todo], valid[todo] = _greedy(ranked[todo, :w], nms_thresh, top)
        todo = todo[~valid[todo, -1]]
        if todo.numel() == 0:
            break
    return kept, valid


def grounding_metrics(
    candidates: Tensor,
    scores: Tensor,
    gt: Tensor,
    nms_thresh: float = 0.5,
    recalls: Sequence[int] = (1, 5),
    ious: Sequence[float] = (0.1, 0.3, 0.5, 0.7),
    return_per_query: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, list[float]]]:
    """``candidates`` [Q, K, 2] and ``gt`` [Q, 2] in seconds, ``scores`` [Q, K] (higher = better).

    Returns percentages under ``"R@{n},IoU={m}"`` for every n in ``recalls`` and m in ``ious`` (e.g.
    ``"R@1,IoU=0.5"``), and ``"mIoU"``. See the module docstring for the exact conventions.
    ``return_per_query``: ``(metrics, per_query)``, each query's outcome under the same keys (0 or 100 for a
    recall, 100 x the top moment's IoU for mIoU), in query order, so that their means are the metrics.
    """
    candidates, scores, gt = (torch.as_tensor(x).detach().cpu().double() for x in (candidates, scores, gt))
    _check(candidates, scores, gt, recalls)
    recalls = [int(r) for r in recalls]
    top = max(recalls)
    q, k = scores.shape
    hit_parts: dict[tuple[int, float], list[Tensor]] = {(r, m): [] for r in recalls for m in ious}
    iou_parts: list[Tensor] = []
    step = max(1, _CHUNK_ELEMENTS // k)
    for a in range(0, q, step):
        kept, valid = _nms_top(candidates[a : a + step], scores[a : a + step], nms_thresh, top)
        iou = torch.where(valid, moment_iou(kept, gt[a : a + step, None, :]), torch.full_like(valid, -1.0,
                                                                                                dtype=torch.float64))
        iou_parts.append(iou[:, 0].clamp_min(0))
        for r in recalls:
            best = iou[:, :r].max(dim=1).values
            for m in ious:
                hit_parts[(r, m)].append((best > m).double())
    per_query = {f"R@{r},IoU={m:g}": 100.0 * torch.cat(hit_parts[(r, m)]) for r in recalls for m in ious}
    per_query["mIoU"] = 100.0 * torch.cat(iou_parts)
    out = {k: float(v.sum()) / q for k, v in per_query.items()}
    if not return_per_query:
        return out
    return out, {k: v.tolist() for k, v in per_query.items()}
