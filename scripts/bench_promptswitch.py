"""Prompt Switch's efficiency claim, measured: scoring N videos x M queries from the same per-frame embeddings with
our offline path against a text-conditioned pooling head, in one run (part of ``make bench``).

- **Ours (offline)**: Prompt Switch's and CLIP4Clip's video embedding is the mean of the normalised frame
  embeddings, computed once per video without the text (``clip_vit``'s ``pooled``); scoring is one cosine matrix
  (``Method.similarity``).
- **Text-conditioned pooling**: an X-Pool-style head (Gorti et al., CVPR 2022), written for this benchmark from
  the paper's description (not the official code): the text embedding queries the video's frame embeddings
  through one attention (q/k/v/output projections), then LayerNorm, a residual linear layer and LayerNorm give a
  video embedding *per (text, video) pair*, scored by cosine with the text. This is the "recompute video
  representations online for every text query" cost Prompt Switch avoids (docs/methods/promptswitch.md). It is
  timed on every pair (``--subset K``: on K videos x all queries, scaled to N x M).
- **Encoding once per video** (``--encode-videos``): the ViT-B/32 tower per video (12 frames, 224 px) for
  CLIP4Clip and for Prompt Switch (6 prompt tokens per frame, switch, aggregation); both paths pay it once.

    python scripts/bench_promptswitch.py [--device cuda] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor, nn

from benchdoc import write_section  # noqa: E402
from vtp_bench.methods.base import Embeddings, cosine_similarity_matrix


class TextConditionedPool(nn.Module):
    """X-Pool-style pooling: [Q, D] texts x [V, T, D] frames -> [V, Q, D], one video embedding per pair."""

    def __init__(self, dim: int, heads: int = 1, dropout: float = 0.3) -> None:
        super().__init__()
        self.heads = heads
        self.norm_in, self.norm_attn, self.norm_out = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.linear = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, text: Tensor, frames: Tensor) -> Tensor:
        (nq, d), (nv, nt, _) = text.shape, frames.shape
        h, c = self.heads, d // self.heads
        q = self.q(self.norm_in(text)).reshape(nq, h, c).permute(1, 0, 2)  # [H, Q, c]
        f = self.norm_in(frames)
        k = self.k(f).reshape(nv, nt, h, c).permute(0, 2, 1, 3)  # [V, H, T, c]
        v = self.v(f).reshape(nv, nt, h, c).permute(0, 2, 1, 3)
        weights = (q[None] @ k.transpose(-1, -2) / c**0.5).softmax(dim=-1)  # [V, H, Q, T]: frames per text
        pooled = (weights @ v).permute(0, 2, 1, 3).reshape(nv, nq, d)
        pooled = self.norm_attn(self.out(pooled))
        return self.norm_out(pooled + self.dropout(self.linear(pooled)))


def offline_scores(text: Tensor, frames: Tensor) -> Tensor:
    """Our path: pool each video once (``clip_vit``'s normalised mean), then one [M, N] cosine matrix."""
    video = F.normalize(frames, dim=-1).mean(dim=1)
    return cosine_similarity_matrix(text, video)


def conditioned_scores(head: TextConditionedPool, text: Tensor, frames: Tensor, chunk: int) -> Tensor:
    """[M, N] scores; every (text, video) pair gets its own pooled video embedding."""
    cols = []
    t = F.normalize(text, dim=-1)
    for i in range(0, frames.shape[0], chunk):
        pooled = F.normalize(head(text, frames[i : i + chunk]), dim=-1)  # [v, M, D]
        cols.append((pooled * t[None]).sum(-1).t())
    return torch.cat(cols, dim=1)


def best_time(fn: Callable[[], Tensor], device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def encode_seconds(device: torch.device, videos: int, frames: int, repeats: int) -> dict[str, float]:
    """Seconds per video of the ViT-B/32 video side of clip4clip and promptswitch (random weights)."""
    from vtp_bench.methods.clip4clip import Clip4Clip, Clip4ClipConfig
    from vtp_bench.methods.promptswitch import PromptSwitch, PromptSwitchConfig

    video = torch.randn(videos, frames, 3, 224, 224, device=device)
    out = {}
    for name, cls, cfg in (("clip4clip", Clip4Clip, Clip4ClipConfig()),
                           ("promptswitch", PromptSwitch, PromptSwitchConfig(caption_weight=0.0))):
        model = cls(OmegaConf.structured(cfg)).to(device).eval()
        out[name] = best_time(lambda model=model: model.encode_video({"video": video}).pooled, device,
                              repeats) / videos
        del model
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--videos", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--frames", type=int, default=12, help="frames per video (Prompt Switch tests on 12)")
    ap.add_argument("--dim", type=int, default=512, help="embedding size (ViT-B/32: 512)")
    ap.add_argument("--subset", type=int, default=0,
                    help="time the conditioned head on this many videos (x all queries) and scale; 0: every pair")
    ap.add_argument("--chunk", type=int, default=10, help="videos per conditioned-head call")
    ap.add_argument("--encode-videos", type=int, default=2, help="videos for the encoder timing (0: skip it)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--write", default=None, help="replace the Prompt Switch section of this markdown file")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    frames = torch.randn(args.videos, args.frames, args.dim, device=device)
    text = torch.randn(args.queries, args.dim, device=device)
    head = TextConditionedPool(args.dim).to(device).eval()
    subset = min(args.subset, args.videos) if args.subset > 0 else args.videos
    with torch.inference_mode():
        sim = offline_scores(text, frames)
        ref = Embeddings(pooled=text), Embeddings(pooled=F.normalize(frames, dim=-1).mean(1))
        assert torch.allclose(sim, cosine_similarity_matrix(ref[0].pooled, ref[1].pooled))
        assert conditioned_scores(head, text, frames[:2], args.chunk).shape == (args.queries, 2)
        ours = best_time(lambda: offline_scores(text, frames), device, args.repeats)
        part = best_time(lambda: conditioned_scores(head, text, frames[:subset], args.chunk), device, 1)
        enc = encode_seconds(device, args.encode_videos, args.frames, 1) if args.encode_videos else {}
    pairs = args.videos * args.queries
    per_pair = part / (subset * args.queries)
    cond_total = per_pair * pairs
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})")
    lines = [
        f"Machine: {name}, torch {torch.__version__}, fp32, inference mode; {args.videos:,} videos x "
        f"{args.queries:,} queries, {args.frames} frame embeddings of {args.dim} dims per video (ViT-B/32 size); "
        f"ours best of {args.repeats}, the conditioned head one pass, each after a warm-up pass.",
        "",
        "| scoring path | pairs timed | time for those (s) | per pair (us) | all "
        f"{args.videos:,} x {args.queries:,} pairs (s) |",
        "|---|---:|---:|---:|---:|",
        f"| ours: video pooled once (mean of normalised frames), one cosine matrix | {pairs:,} | {ours:.4f} | "
        f"{ours / pairs * 1e6:.4f} | {ours:.4f} |",
        f"| text-conditioned pooling head (X-Pool style, built for the benchmark) | {subset * args.queries:,} | "
        f"{part:.3f} | {per_pair * 1e6:.3f} | {cond_total:.2f}{'' if subset == args.videos else ' (scaled)'} |",
        "",
        f"The conditioned head costs **{cond_total / ours:,.0f}x** our scoring for the same pairs; per extra query "
        f"it pays {per_pair * args.videos * 1e3:.2f} ms over {args.videos:,} videos, ours "
        f"{ours / args.queries * 1e3:.4f} ms.",
    ]
    if enc:
        ratio = enc["promptswitch"] / enc["clip4clip"]
        lines += [
            "",
            f"Encoding, paid once per video by both paths (ViT-B/32, {args.frames} frames, 224 px, "
            f"{args.encode_videos} videos timed): CLIP4Clip {enc['clip4clip']:.3f} s/video, Prompt Switch "
            f"{enc['promptswitch']:.3f} s/video ({ratio:.2f}x: 56 instead of 50 tokens per frame, the switch, the "
            f"aggregation); {args.videos:,} videos: {enc['clip4clip'] * args.videos:,.0f} s and "
            f"{enc['promptswitch'] * args.videos:,.0f} s.",
        ]
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section(args.write, "promptswitch",
                      "Prompt Switch: offline video embeddings vs text-conditioned pooling (`make bench`)", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
