"""Text-video retrieval metrics with explicit semantics (see DESIGN.md "Evaluation semantics").

Every query gets the position of its ground truth among the candidates, computed by counting candidates
that score strictly higher (``g``) and the size of the tie group at the ground truth's score (``m``, of which
``k`` are ground truths) — no row is ever sorted, and rows/columns are processed in chunks.

Ties (``ties="expected"``, the default) count as the expectation under uniformly random tie-breaking:
the first ground truth inside the tie group sits at expected position (m - k) / (k + 1), and the chance that
the rank is below K is 1 - C(m-k, t) / C(m, t) with t = K - g. A constant similarity matrix therefore
scores chance (R@1 = 100/N). ``ties="optimistic"`` reproduces Frozen-in-Time's t2v (best tied position).

v2t: ``"caption"`` (Frozen-in-Time family) ranks all texts for a video and keeps the best rank among its own
captions; ``"group"`` (CLIP4Clip, X-Pool, Prompt Switch) first scores each candidate video by its
best-matching caption, then ranks videos. Both agree with one caption per video.
"""

from __future__ import annotations

import torch
from torch import Tensor

KS = (1, 5, 10)
_CHUNK_BYTES = 256 * 2**20  # working memory per chunk


def _expected(g: Tensor, m: Tensor, k: Tensor, ties: str) -> tuple[Tensor, dict[int, Tensor]]:
    """Per-query 0-based rank (expected) and P(rank < K) for each K, in float64."""
    g, m, k = g.double(), m.double(), k.double()
    if ties == "optimistic":
        return g, {K: (g < K).double() for K in KS}
    if ties != "expected":
        raise ValueError(f"ties must be 'expected' or 'optimistic', got {ties!r}")
    rank = g + (m - k) / (k + 1)
    hits = {}
    free = m - k  # non-ground-truth items in the tie group
    for K in KS:
        t = K - g  # slots of the top K left for the tie group
        miss = torch.ones_like(g)  # P(no ground truth among the first t of the tie group)
        for i in range(K):
            active = t > i
            factor = ((free - i) / (m - i).clamp_min(1.0)).clamp_min(0.0)
            miss = torch.where(active, miss * factor, miss)
        p = torch.where(t > free, torch.ones_like(g), 1.0 - miss)  # more slots than non-GT items: a hit
        p = torch.where(t <= 0, torch.zeros_like(g), p)
        hits[K] = p
    return rank, hits


def _summarise(prefix: str, rank: Tensor, hits: dict[int, Tensor], median: str) -> dict[str, float]:
    out = {f"{prefix}/R@{K}": float(100.0 * hits[K].mean()) for K in KS}
    r = torch.sort(rank).values
    n = r.numel()
    if median == "numpy":
        med = r[(n - 1) // 2] if n % 2 else (r[n // 2 - 1] + r[n // 2]) / 2
    elif median == "lower":  # torch.median: CLIP4Clip's multi-sentence t2v MedR
        med = r[(n - 1) // 2]
    else:
        raise ValueError(f"median must be 'numpy' or 'lower', got {median!r}")
    out[f"{prefix}/MedR"] = float(med) + 1.0
    out[f"{prefix}/MeanR"] = float(rank.mean()) + 1.0
    return out


def _rows_per_chunk(row_len: int, chunk_size: int | None, bytes_per: int = 4) -> int:
    if chunk_size is not None:
        return max(1, chunk_size)
    return max(1, _CHUNK_BYTES // max(1, row_len * bytes_per))


def retrieval_metrics(
    sim: Tensor,
    text_to_video: Tensor,
    *,
    v2t_mode: str = "caption",
    ties: str = "expected",
    median: str = "numpy",
    chunk_size: int | None = None,
) -> dict[str, float]:
    """R@1/5/10 (percent), MedR and MeanR (1-based) for t2v and v2t.

    ``sim`` [num_texts, num_videos], higher = more similar; ``text_to_video`` [num_texts] long, the ground-truth
    video of each text (several texts may share a video). The input is never modified.
    """
    if sim.ndim != 2:
        raise ValueError(f"sim must be 2-D [num_texts, num_videos], got shape {tuple(sim.shape)}")
    nt, nv = sim.shape
    t2v = text_to_video.to(device=sim.device, dtype=torch.long)
    if t2v.shape != (nt,):
        raise ValueError(f"text_to_video must have shape [{nt}], got {tuple(text_to_video.shape)}")
    if nt == 0 or nv == 0:
        raise ValueError("empty similarity matrix")
    if int(t2v.min()) < 0 or int(t2v.max()) >= nv:
        raise ValueError(f"text_to_video holds indices outside [0, {nv})")
    caps = torch.bincount(t2v, minlength=nv)
    if bool((caps == 0).any()):
        raise ValueError(f"{int((caps == 0).sum())} of {nv} videos have no caption: the test set is broken")
    if v2t_mode not in ("caption", "group"):
        raise ValueError(f"v2t_mode must be 'caption' or 'group', got {v2t_mode!r}")

    # text -> video: row chunks, count strictly greater and equal against the GT score
    gt = sim[torch.arange(nt, device=sim.device), t2v]  # each text's score with its own video
    g_t, m_t = torch.empty(nt, dtype=torch.long), torch.empty(nt, dtype=torch.long)
    step = _rows_per_chunk(nv, chunk_size)
    nan = 0
    for a in range(0, nt, step):
        block = sim[a : a + step]
        nan += int(torch.isnan(block).sum())
        ref = gt[a : a + step, None]
        g_t[a : a + step] = (block > ref).sum(1).cpu()
        m_t[a : a + step] = (block == ref).sum(1).cpu()
    if nan:
        raise ValueError(f"sim holds {nan} NaN values; a NaN similarity cannot be ranked")
    rank, hits = _expected(g_t, m_t, torch.ones_like(g_t), ties)
    out = _summarise("t2v", rank, hits, median)

    # video -> text
    if v2t_mode == "caption":
        best = torch.full((nv,), float("-inf"), dtype=sim.dtype, device=sim.device)
        best = best.scatter_reduce(0, t2v, gt, reduce="amax")  # best own-caption score per video
        k_v = torch.zeros(nv, dtype=torch.long, device=sim.device).scatter_add(0, t2v, (gt == best[t2v]).long())
        g_v, m_v = torch.empty(nv, dtype=torch.long), torch.empty(nv, dtype=torch.long)
        step = _rows_per_chunk(nt, chunk_size)
        for a in range(0, nv, step):
            block = sim[:, a : a + step]
            ref = best[None, a : a + step]
            g_v[a : a + step] = (block > ref).sum(0).cpu()
            m_v[a : a + step] = (block == ref).sum(0).cpu()
        rank, hits = _expected(g_v, m_v, k_v.cpu(), ties)
    else:
        g_v, m_v = torch.empty(nv, dtype=torch.long), torch.empty(nv, dtype=torch.long)
        step = _rows_per_chunk(nt + nv, chunk_size)
        idx = t2v[None, :]
        for a in range(0, nv, step):
            block = sim[:, a : a + step].t()  # [chunk, num_texts]: query videos against all captions
            grouped = torch.full((block.shape[0], nv), float("-inf"), dtype=sim.dtype, device=sim.device)
            grouped = grouped.scatter_reduce(1, idx.expand(block.shape[0], -1), block, reduce="amax")
            ref = grouped[torch.arange(block.shape[0], device=sim.device), torch.arange(a, a + block.shape[0],
                                                                                       device=sim.device)][:, None]
            g_v[a : a + step] = (grouped > ref).sum(1).cpu()
            m_v[a : a + step] = (grouped == ref).sum(1).cpu()
        rank, hits = _expected(g_v, m_v, torch.ones_like(g_v), ties)
    out.update(_summarise("v2t", rank, hits, median))
    return out
