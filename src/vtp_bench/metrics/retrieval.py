"""Text-video retrieval metrics with explicit semantics (docs/protocols.md, "Retrieval metrics").

Why not reuse an official implementation: they disagree on ties, on the median and on what video-to-text
ranks (docs/protocols.md). This module makes each choice an option, and the defaults
are the ones a collapsed model cannot game.

How: every query's 0-based rank is computed from counts against its ground-truth (GT) score — ``g``
candidates score strictly higher, ``m`` tie with it, ``k`` of those tied are GT. No row is sorted, and the
matrix is walked in row/column chunks, so 50,000 x 50,000 needs ~200 MB of temporaries beyond the input.

Ties (``ties="expected"``, default): expected value under uniformly random tie-breaking. The first GT
inside the tie group sits at expected position (m - k) / (k + 1), and P(rank < K) = 1 - C(m-k, t) / C(m, t)
with t = K - g, so a constant matrix scores chance (R@1 = 100/N), never 100.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["retrieval_metrics", "retrieval_metrics_from_embeddings"]

_TEMP_BYTES = 200 * 2**20  # target size of the per-chunk temporaries
_EXACT_F32 = 2**24  # float32 counts exactly up to here


def _counts_buffer(shape: tuple[int, int], count_len: int, device: torch.device) -> Tensor:
    # Comparisons are written into a float buffer and summed there: summing a bool tensor makes an int64 copy
    # (8 bytes/element); summing 0/1 floats is exact while counts stay below 2**24 (float32) or 2**53.
    dtype = torch.float32 if count_len < _EXACT_F32 else torch.float64
    return torch.empty(shape, dtype=dtype, device=device)


def _count_nan(sim: Tensor, step: int) -> int:
    """Number of NaNs. One cheap pass of row sums; only rows whose sum is NaN are inspected element-wise
    (a row sum is also NaN when +inf and -inf meet, hence the exact re-count)."""
    suspect = torch.nonzero(torch.isnan(sim.sum(dim=1))).flatten()
    total = 0
    for a in range(0, suspect.numel(), step):
        total += int(torch.isnan(sim[suspect[a : a + step]]).sum())
    return total


def _captions_of(t2v: Tensor, caps: Tensor, nv: int) -> Tensor:
    """[nv, max captions] the text indices of each video (in text order), right-padded with -1."""
    order = torch.argsort(t2v, stable=True)
    start = torch.cumsum(caps, 0) - caps
    slot = torch.arange(len(t2v), device=t2v.device) - start[t2v[order]]
    out = torch.full((nv, int(caps.max())), -1, dtype=torch.long, device=t2v.device)
    out[t2v[order], slot] = order
    return out


def _rank_and_hits(
    g: Tensor, m: Tensor, k: Tensor, ties: str, ks: Sequence[int]
) -> tuple[Tensor, dict[int, Tensor]]:
    """0-based rank per query and P(rank < K) per K, in float64 on CPU.

    ``g``: candidates scoring strictly above the best GT score; ``m``: size of the tie group at that score
    (GT included); ``k``: GT items in the tie group (>1 only for caption-mode v2t).
    """
    g, m, k = g.double().cpu(), m.double().cpu(), k.double().cpu()
    if ties == "optimistic":  # the first GT wins every tie
        return g, {K: (g < K).double() for K in ks}
    free = m - k  # non-GT members of the tie group
    rank = g + free / (k + 1)
    hits = {}
    for K in ks:
        t = K - g  # top-K slots left for the tie group
        # P(no GT among the first t of the tie group) = C(free, t) / C(m, t) = prod_{i<t} (free - i) / (m - i):
        # 1 (empty product) for t <= 0, 0 for t > free (the factor i = free vanishes). t <= K keeps the product
        # short, and float64 keeps it accurate for m up to millions.
        miss = torch.ones_like(g)
        for i in range(K):
            factor = ((free - i) / (m - i).clamp_min(1.0)).clamp_min(0.0)
            miss = torch.where(t > i, miss * factor, miss)
        hits[K] = 1.0 - miss
    return rank, hits


def _summarise(prefix: str, rank: Tensor, hits: dict[int, Tensor], median: str) -> dict[str, float]:
    out = {f"{prefix}/R@{K}": float(100.0 * p.mean()) for K, p in hits.items()}
    r = torch.sort(rank).values
    n = r.numel()
    lo = r[(n - 1) // 2]
    med = lo if median == "lower" or n % 2 else (lo + r[n // 2]) / 2
    out[f"{prefix}/MedR"] = float(med) + 1.0
    out[f"{prefix}/MeanR"] = float(rank.mean()) + 1.0
    out[f"{prefix}/num_queries"] = float(n)
    return out


def _per_query(prefix: str, rank: Tensor, hits: dict[int, Tensor]) -> dict[str, list[float]]:
    """Each query's outcome under the metric's own key, so that the mean of ``[prefix/R@K]`` is R@K and the mean
    of ``[prefix/MeanR]`` is MeanR; ``prefix/rank`` (1-based, the same values as MeanR's) gives MedR as its median
    (``median="numpy"``; the lower middle value for ``"lower"``), e.g. on a bootstrap resample."""
    out = {f"{prefix}/R@{K}": (100.0 * p).tolist() for K, p in hits.items()}
    out[f"{prefix}/MeanR"] = (rank + 1.0).tolist()
    out[f"{prefix}/rank"] = out[f"{prefix}/MeanR"]
    return out


def _finish(parts: list[tuple[str, Tensor, dict[int, Tensor]]], median: str, return_per_query: bool
            ) -> dict[str, float] | tuple[dict[str, float], dict[str, list[float]]]:
    metrics = {k: v for prefix, rank, hits in parts for k, v in _summarise(prefix, rank, hits, median).items()}
    if not return_per_query:
        return metrics
    return metrics, {k: v for prefix, rank, hits in parts for k, v in _per_query(prefix, rank, hits).items()}


def _group_v2t(columns: Callable[[int, int], Tensor], t2v: Tensor, nv: int, dtype: torch.dtype, step: int,
               ties: str, ks: Sequence[int]) -> tuple[Tensor, dict[int, Tensor]]:
    """Group-wise video -> text ranks. ``columns(a, b)`` gives the scores [num_texts, b - a] of every text against
    videos a..b-1 (a slice of the matrix, or a block computed from embeddings). For that chunk of query videos,
    grouped[u, j] = max over u's captions c of score[c, a + j]; query j's GT is the row u = a + j, ranked among
    all videos."""
    nt, dev = t2v.numel(), t2v.device
    g = torch.empty(nv, dtype=torch.long, device=dev)
    ge = torch.empty(nv, dtype=torch.long, device=dev)
    width = min(step, nv)
    grouped_buf = torch.empty((nv, width), dtype=dtype, device=dev)
    buf = _counts_buffer((nv, width), nv, dev)
    for a in range(0, nv, step):
        block = columns(a, a + step)
        w = block.shape[1]
        grouped = grouped_buf[:, :w]
        grouped.fill_(float("-inf"))
        grouped.scatter_reduce_(0, t2v[:, None].expand(nt, w), block, reduce="amax")
        cols = torch.arange(w, device=dev)
        ref = grouped[a + cols, cols][None, :]
        out = buf[:, :w]
        g[a : a + w] = torch.gt(grouped, ref, out=out).sum(0)
        ge[a : a + w] = torch.ge(grouped, ref, out=out).sum(0)
        del block
    return _rank_and_hits(g, ge - g, torch.ones_like(g), ties, ks)


def _step(chunk_size: int | None, per_line_bytes: int) -> int:
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return int(chunk_size)
    return max(1, _TEMP_BYTES // max(1, per_line_bytes))


def _check_options(v2t_mode: str, ties: str, median: str, ks: Sequence[int]) -> tuple[int, ...]:
    if v2t_mode not in ("caption", "group"):
        raise ValueError(f"v2t_mode must be 'caption' or 'group', got {v2t_mode!r}")
    if ties not in ("expected", "optimistic"):
        raise ValueError(f"ties must be 'expected' or 'optimistic', got {ties!r}")
    if median not in ("numpy", "lower"):
        raise ValueError(f"median must be 'numpy' or 'lower', got {median!r}")
    ks = tuple(int(K) for K in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    return ks


def _check_gt(text_to_video: Tensor, nt: int, nv: int, device: torch.device, what: str) -> tuple[Tensor, Tensor]:
    """``text_to_video`` as long on ``device`` and the number of captions of each video, or a clear error."""
    t2v = torch.as_tensor(text_to_video)
    if t2v.is_floating_point() or t2v.is_complex() or t2v.dtype == torch.bool:
        raise ValueError(f"text_to_video must hold integer video indices, got dtype {t2v.dtype}")
    if t2v.shape != (nt,):
        raise ValueError(f"text_to_video must have shape [{nt}] ({what}), got {tuple(t2v.shape)}")
    t2v = t2v.to(device=device, dtype=torch.long)
    lo, hi = int(t2v.min()), int(t2v.max())
    if lo < 0 or hi >= nv:
        raise ValueError(f"text_to_video holds indices in [{lo}, {hi}], outside the {nv} videos [0, {nv})")
    caps = torch.bincount(t2v, minlength=nv)
    if bool((caps == 0).any()):
        raise ValueError(f"{int((caps == 0).sum())} of {nv} videos have no caption: the test set is broken")
    return t2v, caps


@torch.no_grad()
def retrieval_metrics(
    sim: Tensor,
    text_to_video: Tensor,
    *,
    v2t_mode: str = "caption",
    ties: str = "expected",
    median: str = "numpy",
    chunk_size: int | None = None,
    ks: Sequence[int] = (1, 5, 10),
    return_per_query: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, list[float]]]:
    """Text-to-video and video-to-text R@K, MedR, MeanR of a similarity matrix.

    Args:
        sim: [num_texts, num_videos], higher = more similar, on any device. Integer/bool input is scored as
            float64. Never modified.
        text_to_video: [num_texts] integer GT video of each text; several texts may share a video (MSVD).
        v2t_mode: ``"caption"`` (Frozen-in-Time, RegionLearner, DemoVLP, MILES ``v2t_metrics``): a video ranks
            all texts; its rank is the best among its own captions. ``"group"`` (CLIP4Clip
            ``tensor_video_to_text_sim``, X-Pool / Prompt Switch ``v2t_metrics``): a video scores each video by
            that video's best caption, then ranks videos. Identical when every video has one caption.
        ties: ``"expected"`` (uniformly random tie-breaking, in expectation; a collapsed model gets chance) or
            ``"optimistic"`` (GT wins every tie: Frozen-in-Time ``t2v_metrics``; note FiT's v2t averaged ties,
            which equals ``"expected"`` with one caption per video).
        median: ``"numpy"`` (mean of the two middle ranks, as CLIP4Clip ``compute_metrics``, FiT, X-Pool) or
            ``"lower"`` (torch.median: CLIP4Clip's multi-sentence t2v ``tensor_text_to_video_metrics``).
        chunk_size: rows (t2v) / columns (v2t) per chunk; default sizes the temporaries to ~200 MB.
        ks: the K of R@K.
        return_per_query: also return each query's outcome (texts in row order for t2v, videos in column order
            for v2t): ``{t2v,v2t}/R@K`` (100 x P(hit), so their mean is the metric), ``/MeanR`` and ``/rank``
            (1-based rank; MedR is its median). What a bootstrap interval or a paired test resamples.

    Returns:
        Python floats: ``{t2v,v2t}/R@K`` in percent (expected hit rate x 100), ``{t2v,v2t}/MedR`` and
        ``/MeanR`` 1-based (perfect = 1.0), and ``{t2v,v2t}/num_queries`` (texts, resp. videos); with
        ``return_per_query``, ``(metrics, per_query)``.

    Raises:
        ValueError: wrong shapes, NaN in ``sim`` (with the count), GT indices out of range, a video without any
            caption (a broken test set), or an unknown option.
    """
    # ---- validation -----------------------------------------------------------------------------------------
    ks = _check_options(v2t_mode, ties, median, ks)
    if not isinstance(sim, Tensor):
        sim = torch.as_tensor(sim)
    if sim.ndim != 2:
        raise ValueError(f"sim must be 2-D [num_texts, num_videos], got shape {tuple(sim.shape)}")
    if sim.is_complex():
        raise ValueError("sim must be real-valued")
    if not sim.is_floating_point():
        sim = sim.to(torch.float64)
    nt, nv = sim.shape
    if nt == 0 or nv == 0:
        raise ValueError(f"empty similarity matrix of shape {tuple(sim.shape)}")
    t2v, caps = _check_gt(text_to_video, nt, nv, sim.device, "one GT video per row of sim")
    step = _step(chunk_size, nv * 4)
    nan = _count_nan(sim, step)
    if nan:
        raise ValueError(f"sim holds {nan} NaN values; a NaN similarity cannot be ranked")

    dev = sim.device
    rows = torch.arange(nt, device=dev)
    gt = sim[rows, t2v]  # each text's score with its own video

    # ---- text -> video: row chunks, each text against all videos ------------------------------------------
    g = torch.empty(nt, dtype=torch.long, device=dev)
    ge = torch.empty(nt, dtype=torch.long, device=dev)
    buf = _counts_buffer((min(step, nt), nv), nv, dev)
    for a in range(0, nt, step):
        block, ref = sim[a : a + step], gt[a : a + step, None]
        out = buf[: block.shape[0]]
        g[a : a + step] = torch.gt(block, ref, out=out).sum(1)
        ge[a : a + step] = torch.ge(block, ref, out=out).sum(1)
    del buf
    t2v_part = ("t2v", *_rank_and_hits(g, ge - g, torch.ones_like(g), ties, ks))

    # ---- video -> text ----------------------------------------------------------------------------------------
    if v2t_mode == "caption" or bool((caps == 1).all()):
        # Each video (column) against all texts; the reference is its best own-caption score, and k counts
        # its captions tied at that score (the best of k tied GTs ranks better than a single one).
        best = torch.full((nv,), float("-inf"), dtype=sim.dtype, device=dev)
        best = best.scatter_reduce(0, t2v, gt, reduce="amax")
        k = torch.zeros(nv, dtype=torch.long, device=dev).scatter_add(0, t2v, (gt == best[t2v]).long())
        g = torch.empty(nv, dtype=torch.long, device=dev)
        ge = torch.empty(nv, dtype=torch.long, device=dev)
        step = _step(chunk_size, nt * 4)
        buf = _counts_buffer((nt, min(step, nv)), nt, dev)
        for a in range(0, nv, step):
            block, ref = sim[:, a : a + step], best[None, a : a + step]
            out = buf[:, : block.shape[1]]
            g[a : a + step] = torch.gt(block, ref, out=out).sum(0)
            ge[a : a + step] = torch.ge(block, ref, out=out).sum(0)
        del buf
        rank, hits = _rank_and_hits(g, ge - g, k, ties, ks)
    else:
        step = _step(chunk_size, nv * (sim.element_size() + 4))
        rank, hits = _group_v2t(lambda a, b: sim[:, a:b], t2v, nv, sim.dtype, step, ties, ks)
    return _finish([t2v_part, ("v2t", rank, hits)], median, return_per_query)


@torch.no_grad()
def retrieval_metrics_from_embeddings(
    text: Tensor,
    video: Tensor,
    text_to_video: Tensor,
    *,
    v2t_mode: str = "caption",
    ties: str = "expected",
    median: str = "numpy",
    chunk_size: int | None = None,
    ks: Sequence[int] = (1, 5, 10),
    return_per_query: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, list[float]]]:
    """``retrieval_metrics(text @ video.T, text_to_video, ...)`` without the matrix: the scores are computed in
    blocks of rows (t2v, caption-mode v2t) or columns (group-mode v2t), so memory stays at the embeddings plus
    ~400 MB of temporaries whatever the number of queries (100,000 x 100,000 float32 would be 40 GB).

    For a method whose similarity is a plain dot product of embeddings (normalise them first for cosine).
    The counts are the same as the matrix path's wherever a block's product equals the corresponding entries
    of ``text @ video.T`` (always when the products are exact, e.g. quantised embeddings; otherwise the two may
    differ only where BLAS rounds a block differently from the whole, in the last bit of a score). Every
    comparison is between scores of the same block computation, so a GT score always ties with itself.

    Args:
        text: [num_texts, D] text embeddings; video: [num_videos, D]; same dtype and device (the scores are in
            that dtype; integer input is scored as float64).
        text_to_video, v2t_mode, ties, median, chunk_size, ks, return_per_query: as ``retrieval_metrics``.
    """
    ks = _check_options(v2t_mode, ties, median, ks)
    text, video = torch.as_tensor(text), torch.as_tensor(video)
    if text.ndim != 2 or video.ndim != 2 or text.shape[1] != video.shape[1]:
        raise ValueError(f"text and video must be [N, D] with the same D, got {tuple(text.shape)} and "
                         f"{tuple(video.shape)}")
    if text.is_complex() or video.is_complex():
        raise ValueError("embeddings must be real-valued")
    if not text.is_floating_point():
        text = text.to(torch.float64)
    if not video.is_floating_point():
        video = video.to(torch.float64)
    if text.dtype != video.dtype or text.device != video.device:
        raise ValueError(f"text and video embeddings differ in dtype/device: {text.dtype}/{text.device} vs "
                         f"{video.dtype}/{video.device}")
    nt, nv = text.shape[0], video.shape[0]
    if nt == 0 or nv == 0:
        raise ValueError(f"empty embeddings: {nt} texts, {nv} videos")
    dev = text.device
    t2v, caps = _check_gt(text_to_video, nt, nv, dev, "one GT video per text embedding")
    video_t = video.T

    # ---- text -> video: row blocks; the GT score is read from the block itself -----------------------------
    step = _step(chunk_size, nv * 4)
    g = torch.empty(nt, dtype=torch.long, device=dev)
    ge = torch.empty(nt, dtype=torch.long, device=dev)
    gt = torch.empty(nt, dtype=text.dtype, device=dev)
    buf = _counts_buffer((min(step, nt), nv), nv, dev)
    nan = 0
    for a in range(0, nt, step):
        block = text[a : a + step] @ video_t
        nan += _count_nan(block, step)  # row sums: free beside the product; rows with a NaN re-counted exactly
        b = block.shape[0]
        gt[a : a + b] = block[torch.arange(b, device=dev), t2v[a : a + b]]
        out = buf[:b]
        g[a : a + b] = torch.gt(block, gt[a : a + b, None], out=out).sum(1)
        ge[a : a + b] = torch.ge(block, gt[a : a + b, None], out=out).sum(1)
        del block  # before the next product is allocated: one block alive at a time
    if nan:
        raise ValueError(f"text @ video.T holds {nan} NaN values; a NaN similarity cannot be ranked")
    t2v_part = ("t2v", *_rank_and_hits(g, ge - g, torch.ones_like(g), ties, ks))

    # ---- video -> text ----------------------------------------------------------------------------------------
    g = torch.zeros(nv, dtype=torch.long, device=dev)
    ge = torch.zeros(nv, dtype=torch.long, device=dev)
    if v2t_mode == "caption" or bool((caps == 1).all()):
        # row blocks of the transposed product (videos x every text): a video's best caption score and the
        # counts against it come from the same block computation, so its best GT ties with itself; row sums,
        # as the t2v pass (column sums of the t2v blocks cost half as much again as the product)
        del buf
        k = torch.zeros(nv, dtype=torch.long, device=dev)
        captions = _captions_of(t2v, caps, nv)  # [nv, max captions] text indices, -1 padded
        text_t = text.T
        step = _step(chunk_size, nt * 4)
        buf = _counts_buffer((min(step, nv), nt), nt, dev)
        for a in range(0, nv, step):
            block = video[a : a + step] @ text_t
            b = block.shape[0]
            idx = captions[a : a + b]
            own = block.gather(1, idx.clamp(min=0)).masked_fill(idx < 0, float("-inf"))
            best = own.amax(1)
            k[a : a + b] = (own == best[:, None]).sum(1)
            out = buf[:b]
            g[a : a + b] = torch.gt(block, best[:, None], out=out).sum(1).long()
            ge[a : a + b] = torch.ge(block, best[:, None], out=out).sum(1).long()
            del block
        del buf
        rank, hits = _rank_and_hits(g, ge - g, k, ties, ks)
    else:
        # column blocks [nt, w] of every text against w query videos, grouped as in retrieval_metrics
        del buf
        step = _step(chunk_size, nv * (text.element_size() + 4) + nt * text.element_size())
        rank, hits = _group_v2t(lambda a, b: text @ video_t[:, a:b], t2v, nv, text.dtype, step, ties, ks)
    return _finish([t2v_part, ("v2t", rank, hits)], median, return_per_query)
