"""Evaluation at scale: time and peak memory of the retrieval metrics at N queries x N videos (N = 10,000,
50,000, 100,000) and of the grounding metrics at 10,000 queries x 1,000 candidates, ours against a
straightforward implementation written for this benchmark, in one run (part of ``make bench``).

- Retrieval, ours: ``retrieval_metrics_from_embeddings`` (counts against the GT score, no sort, the scores
  computed in row blocks from the embeddings: the N x N matrix never exists). Baseline: ``sort_retrieval``
  below, what most official evaluation code does (argsort every row of the similarity matrix, find the GT's
  position), also in row / column blocks so that it fits in memory. Both directions (t2v, caption-mode v2t).
- Grounding (10,000 queries x 990 candidates, the upper triangle of a 44 x 44 LocVTP / 2D-TAN score map), ours:
  ``grounding_metrics`` (NMS for all queries at once). Baseline: ``loop_grounding`` below, a
  per-query Python loop (stable sort, greedy NMS, IoU against the kept moments), as LocVTP / 2D-TAN write it.
- Every measurement runs in a fresh subprocess; peak memory is that process's peak resident set size
  (``getrusage`` ``ru_maxrss``), reset once the inputs are built (/proc/self/clear_refs), and reported beyond
  the RSS it had then.

    python scripts/bench_metrics.py [--sizes 10000 50000 100000] [--baseline-sizes 10000] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdoc import default_threads, peak_rss_mib, reset_peak_rss, rss_mib, write_section  # noqa: E402
from vtp_bench.metrics import grounding_metrics, retrieval_metrics_from_embeddings  # noqa: E402

DIM = 256  # Frozen / MILES / RegionLearner's joint embedding width
KS = (1, 5, 10)
GROUNDING = {"queries": 10_000, "side": 44}  # 44 x 44 map: 990 candidates per query


# ------------------------------------------------------------------------------------------------ baselines
def _summary(prefix: str, rank: Tensor, ks=KS) -> dict[str, float]:
    r = rank.double()
    out = {f"{prefix}/R@{k}": float(100.0 * (r < k).double().mean()) for k in ks}
    out[f"{prefix}/MedR"] = float(np.median(r.numpy())) + 1.0
    out[f"{prefix}/MeanR"] = float(r.mean()) + 1.0
    out[f"{prefix}/num_queries"] = float(r.numel())
    return out


@torch.no_grad()
def sort_retrieval(text: Tensor, video: Tensor, text_to_video: Tensor, block: int = 256) -> dict[str, float]:
    """t2v and caption-mode v2t by sorting: each text's rank is the position of its video in its row sorted by
    score; each video's rank is the best position of one of its captions in its column sorted by score. Ties
    are broken by index (a sort), so it equals ``retrieval_metrics`` only where no score ties a GT score."""
    nt, nv = text.shape[0], video.shape[0]
    t2v = text_to_video.long()
    t_rank = torch.empty(nt, dtype=torch.long)
    for a in range(0, nt, block):
        sim = text[a : a + block] @ video.T
        order = torch.argsort(sim, dim=1, descending=True, stable=True)
        t_rank[a : a + block] = (order == t2v[a : a + block, None]).int().argmax(dim=1)
    v_rank = torch.empty(nv, dtype=torch.long)
    for a in range(0, nv, block):
        sim = text @ video[a : a + block].T  # [nt, w]
        w = sim.shape[1]
        order = torch.argsort(sim, dim=0, descending=True, stable=True)
        pos = torch.empty_like(order).scatter_(0, order, torch.arange(nt)[:, None].expand(nt, w).contiguous())
        own = t2v[:, None] == torch.arange(a, a + w)[None, :]
        v_rank[a : a + w] = pos.masked_fill(~own, nt).min(dim=0).values
    return {**_summary("t2v", t_rank), **_summary("v2t", v_rank)}


def _iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    span = max(a[1], b[1]) - min(a[0], b[0])
    return inter / span if span > 0 else 0.0


def loop_grounding(candidates: Tensor, scores: Tensor, gt: Tensor, nms_thresh: float = 0.5,
                   recalls=(1, 5), ious=(0.1, 0.3, 0.5, 0.7)) -> dict[str, float]:
    """One query at a time: stable sort by score, greedy NMS until max(recalls) moments are kept, IoU with the
    GT of each kept moment (the conventions of ``vtp_bench.metrics.grounding``)."""
    cands, sc, g = candidates.double().numpy(), scores.double().numpy(), gt.double().numpy()
    top = max(recalls)
    hits = {(r, m): 0 for r in recalls for m in ious}
    miou = 0.0
    for q in range(sc.shape[0]):
        kept: list[tuple[float, float]] = []
        for i in np.argsort(-sc[q], kind="stable"):
            c = (float(cands[q, i, 0]), float(cands[q, i, 1]))
            if all(_iou(c, k) <= nms_thresh for k in kept):
                kept.append(c)
                if len(kept) == top:
                    break
        iou = [_iou(k, (float(g[q, 0]), float(g[q, 1]))) for k in kept]
        miou += iou[0]
        for r in recalls:
            best = max(iou[:r])
            for m in ious:
                hits[(r, m)] += best > m
    n = sc.shape[0]
    out = {f"R@{r},IoU={m:g}": 100.0 * hits[(r, m)] / n for r in recalls for m in ious}
    out["mIoU"] = 100.0 * miou / n
    return out


# ------------------------------------------------------------------------------------------------ inputs
def retrieval_inputs(n: int, dim: int = DIM, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """n unit video embeddings, one caption each (a noisy copy, shuffled), float32."""
    g = torch.Generator().manual_seed(seed)
    video = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    t2v = torch.randperm(n, generator=g)
    text = video[t2v]
    text.add_(torch.randn(n, dim, generator=g), alpha=0.25)  # t2v R@1 about 60 % at 10,000: ranks vary
    return F.normalize(text, dim=1, out=text), video, t2v


def grounding_inputs(q: int, side: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """LocVTP / 2D-TAN candidates: every cell (i, j >= i) of a side x side map is the moment
    [i d / side, (j + 1) d / side]; scores peak smoothly around one cell per query (plus noise), so neighbouring,
    overlapping moments score alike and NMS has to walk past them, as on real score maps."""
    g = torch.Generator().manual_seed(seed)
    i, j = torch.triu_indices(side, side)
    duration = 10 + 50 * torch.rand(q, 1, generator=g, dtype=torch.float64)
    cands = torch.stack([i * duration / side, (j + 1) * duration / side], -1)  # [Q, K, 2]
    ci = torch.randint(0, side, (q, 1), generator=g)
    cj = ci + (torch.rand(q, 1, generator=g) * (side - ci)).long()
    width = 1 + side / 8 * torch.rand(q, 1, generator=g, dtype=torch.float64)
    scores = torch.exp(-((i - ci) ** 2 + (j - cj) ** 2) / width**2)
    scores = scores + 0.05 * torch.rand(q, i.numel(), generator=g, dtype=torch.float64)
    gs = (ci + torch.randn(q, 1, generator=g, dtype=torch.float64)).clamp(0, side - 1) * duration / side
    ge = torch.maximum(gs + duration / side, (cj + 1 + torch.randn(q, 1, generator=g, dtype=torch.float64))
                       .clamp(1, side) * duration / side)
    return cands, scores, torch.cat([gs, ge], 1)


@torch.no_grad()
def matmul_floor(text: Tensor, video: Tensor) -> None:
    """The floor of any metric computed from the scores: the two N x N x D products alone (text x video for t2v,
    video x text for v2t), in the same row blocks as ``retrieval_metrics_from_embeddings``, nothing else."""
    from vtp_bench.metrics.retrieval import _TEMP_BYTES

    for a_side, b_side in ((text, video), (video, text)):
        step = max(1, _TEMP_BYTES // (4 * b_side.shape[0]))
        b_t = b_side.T
        for a in range(0, a_side.shape[0], step):
            block = a_side[a : a + step] @ b_t
            del block


# ------------------------------------------------------------------------------------------------ one measurement
def measure(kind: str, impl: str, n: int, threads: int) -> dict:
    """Build the inputs, then time one call; run in its own process so that ru_maxrss is this call's."""
    torch.set_num_threads(threads)
    if kind == "retrieval":
        inputs = retrieval_inputs(n)
        fn = retrieval_metrics_from_embeddings if impl == "ours" else sort_retrieval
    else:
        inputs = grounding_inputs(n, GROUNDING["side"])
        fn = grounding_metrics if impl == "ours" else loop_grounding
    if not reset_peak_rss():  # then the peak may be the inputs' construction: report beyond that peak
        print("cannot reset the peak RSS (/proc/self/clear_refs): the figures are lower bounds", file=sys.stderr)
    base = max(rss_mib(), peak_rss_mib())
    t = time.perf_counter()
    metrics = fn(*inputs)
    seconds = time.perf_counter() - t
    out = {"kind": kind, "impl": impl, "n": n, "seconds": seconds, "peak_rss_mib": peak_rss_mib(),
           "input_rss_mib": base, "beyond_input_mib": peak_rss_mib() - base, "metrics": metrics}
    if kind == "retrieval" and impl == "ours":  # the floor, in the same process right after (same inputs, threads)
        t = time.perf_counter()
        matmul_floor(inputs[0], inputs[1])
        out["floor_seconds"] = time.perf_counter() - t
    return out


def run_one(kind: str, impl: str, n: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--one", kind, impl, str(n), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{kind:9s} {impl:8s} n={n:>7,d}: {res['seconds']:8.2f} s, peak RSS {res['peak_rss_mib']:7.0f} MiB "
          f"({res['beyond_input_mib']:.0f} MiB beyond the inputs)", flush=True)
    return res


def _diff(a: dict, b: dict) -> float:
    return max(abs(a[k] - b[k]) for k in a)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    ap.add_argument("--baseline-sizes", type=int, nargs="*", default=[10_000])
    ap.add_argument("--one", nargs=3, metavar=("KIND", "IMPL", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=default_threads(),
                    help="torch threads (default: $VTP_BENCH_THREADS or all cores)")
    ap.add_argument("--write", default=None, help="replace the metrics section of this markdown file")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], int(args.one[2]), args.threads)))
        return 0
    th = args.threads

    start = time.perf_counter()
    load = os.getloadavg()[0]
    g_ours = run_one("grounding", "ours", GROUNDING["queries"], th)
    g_base = run_one("grounding", "loop", GROUNDING["queries"], th)
    base = {n: run_one("retrieval", "sort", n, th) for n in args.baseline_sizes}
    ours = {n: run_one("retrieval", "ours", n, th) for n in args.sizes}
    for n, b in base.items():  # like with like: the same numbers (float32 scores can tie by chance: shown)
        if n in ours:
            b["max_metric_diff"] = _diff(ours[n]["metrics"], b["metrics"])
    g_diff = _diff(g_ours["metrics"], g_base["metrics"])
    side = GROUNDING["side"]
    assert g_diff < 1e-9, f"grounding: ours and the per-query loop disagree by {g_diff}"

    lines = [
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"torch {torch.__version__}, "
        f"{th} torch thread(s); load average {load:.1f} at the start (the machine is shared). "
        f"Embeddings: float32, {DIM} dims, unit norm, one caption per video; both directions (t2v, caption-mode "
        "v2t) in one call. The matmul floor: the two N x N x 256 products alone (t2v and v2t blocks, nothing "
        "else), timed in the same process right after ours. Memory: peak RSS (`getrusage` ru_maxrss) of a fresh "
        "process per row, and that peak "
        "beyond the process's RSS once the inputs were built (the embeddings: 2 x N x 256 x 4 bytes; the peak is "
        "reset at that point through /proc/self/clear_refs).",
        "",
        "| retrieval, N queries x N videos | ours (s) | matmul floor (s) | ours / floor | ours peak RSS / beyond "
        "inputs (MiB) | sort baseline (s) | baseline peak RSS / beyond inputs (MiB) | baseline / ours | same metrics |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for n in sorted(set(ours) | set(base)):
        o, b = ours.get(n), base.get(n)
        cells = [f"{n:,}"]
        cells += ([f"{o['seconds']:.2f}", f"{o['floor_seconds']:.2f}", f"**{o['seconds'] / o['floor_seconds']:.2f}x**",
                   f"{o['peak_rss_mib']:.0f} / {o['beyond_input_mib']:.0f}"] if o else ["-", "-", "-", "-"])
        if b:
            same = ("yes" if b.get("max_metric_diff", 1) == 0 else
                    f"max difference {b['max_metric_diff']:.3g}" if "max_metric_diff" in b else "-")
            cells += [f"{b['seconds']:.2f}", f"{b['peak_rss_mib']:.0f} / {b['beyond_input_mib']:.0f}",
                      f"**{b['seconds'] / o['seconds']:.1f}x**" if o else "-", same]
        else:
            cells += ["not run", "-", "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"| grounding, {GROUNDING['queries']:,} queries x {side * (side + 1) // 2} candidates "
        f"(a {side} x {side} map) | time (s) | "
        "peak RSS / beyond inputs (MiB) | ratio |",
        "|---|---:|---:|---:|",
        f"| ours (`grounding_metrics`, all queries at once) | {g_ours['seconds']:.2f} | "
        f"{g_ours['peak_rss_mib']:.0f} / {g_ours['beyond_input_mib']:.0f} | "
        f"**{g_base['seconds'] / g_ours['seconds']:.1f}x** |",
        f"| per-query loop (written for the benchmark) | {g_base['seconds']:.2f} | "
        f"{g_base['peak_rss_mib']:.0f} / {g_base['beyond_input_mib']:.0f} | 1.0x |",
        "",
        f"Grounding: both give the same numbers (max difference {g_diff:.1g}); R@1,IoU=0.5 = "
        f"{g_ours['metrics']['R@1,IoU=0.5']:.2f}. Whole script: {time.perf_counter() - start:.0f} s.",
    ]
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section(args.write, "metrics", "Evaluation metrics at scale (`make bench`)", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
