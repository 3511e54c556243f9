"""Contrastive losses and the cross-rank gather they use.

``gather="global"`` follows open_clip's local-loss + gather-with-grad semantics: every rank gathers the
other ranks' embeddings *with* gradient (the backward of ``torch.distributed.nn.all_gather`` sums the
gradients of every rank's loss into the owner's slice) and scores only its own rows against all columns.
DDP's gradient averaging then yields exactly the single-process gradient of the mean loss over the
global batch. The anchors' "slice-only" gather (backward keeps only the local slice, no reduction) gets
the scale wrong with a global loss and the direction wrong with a local one (docs/protocols.md, "Losses across ranks").

``gather="none"`` keeps per-GPU negatives only, as methods trained without a gather did.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from vtp_bench.choices import GATHER_MODES  # noqa: F401 (kept here for the modules that use it)
from vtp_bench.distributed import rank_world


@dataclass
class Gathered:
    """Rows of every rank in rank order, where this rank's rows start, and the global row count."""

    all: Tensor
    offset: int
    total: int


def _all_gather_autograd(x: Tensor) -> Tensor:
    try:  # autograd-aware all-gather: its backward reduce-scatters (sums) every rank's gradient
        from torch.distributed._functional_collectives import all_gather_single_autograd

        return all_gather_single_autograd(x.contiguous(), gather_dim=0, group=dist.group.WORLD)
    except ImportError:  # older torch, without all_gather_single_autograd
        import torch.distributed.nn.functional as dist_fn

        return torch.cat(dist_fn.all_gather(x), dim=0)


def gather_with_grad(x: Tensor, mode: str) -> Gathered:
    """Concatenate ``x`` [B_r, ...] over ranks, with gradients flowing back to the owning rank.

    Ranks may hold different batch sizes (a video skipped as unreadable shrinks a batch): rows are padded
    to the largest batch for the collective and the padding is dropped again.
    """
    if mode not in GATHER_MODES:
        raise ValueError(f"loss.gather must be one of {GATHER_MODES}, got {mode!r}")
    rank, world = rank_world()
    if mode == "none" or world == 1:
        return Gathered(x, 0, x.shape[0])
    size = torch.tensor([x.shape[0]], device=x.device)
    sizes_t = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes_t, size)
    sizes = [int(s) for s in sizes_t]
    biggest = max(sizes)
    if all(s == biggest for s in sizes):
        return Gathered(_all_gather_autograd(x), rank * biggest, biggest * world)
    padded = torch.cat([x, x.new_zeros((biggest - x.shape[0], *x.shape[1:]))])
    gathered = _all_gather_autograd(padded)
    keep = torch.cat([torch.arange(s, device=x.device) + r * biggest for r, s in enumerate(sizes)])
    return Gathered(gathered.index_select(0, keep), sum(sizes[:rank]), sum(sizes))


def _at_least_fp32(x: Tensor) -> Tensor:
    """Softmax over similarities in fp32 at least (bf16/fp16 under autocast), fp64 stays fp64."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def norm_softmax_loss(
    text: Tensor, video: Tensor, temperature: float = 0.05, gather: str = "global"
) -> dict[str, Tensor]:
    """Frozen-in-Time's NormSoftmax: cosine similarity / τ, cross-entropy text->video plus video->text
    (summed, not averaged, as in the official ``NormSoftmaxLoss``). Inputs are per-rank [B, D] embeddings.
    """
    t = F.normalize(_at_least_fp32(text), dim=-1)
    v = F.normalize(_at_least_fp32(video), dim=-1)
    gt, gv = gather_with_grad(t, gather), gather_with_grad(v, gather)
    labels = torch.arange(t.shape[0], device=t.device) + gt.offset
    # sum over this rank's rows, scaled so that DDP's average over ranks is the mean over the global
    # batch (equal to the local mean when every rank holds the same number of rows)
    scale = rank_world()[1] / gt.total if gather == "global" else 1.0 / t.shape[0]
    t2v = F.cross_entropy(t @ gv.all.t() / temperature, labels, reduction="sum") * scale
    v2t = F.cross_entropy(v @ gt.all.t() / temperature, labels, reduction="sum") * scale
    return {"t2v": t2v, "v2t": v2t}


def global_mean(total: Tensor, count: Tensor, gather: str, min_count: float | None = 1.0) -> Tensor:
    """``total / count`` of a loss summed over this rank's items. With ``gather="global"`` the count is summed over
    the ranks and the quotient scaled by the world size, so DDP's average of the ranks' values (and of their
    gradients) is the single-process mean over the global batch; otherwise the per-rank mean. ``min_count`` keeps an
    empty count from dividing by zero (None: no floor, for weighted counts that may be below 1)."""
    _, world = rank_world()
    n, scale = count.detach(), 1
    if gather == "global" and world > 1:
        n, scale = n.to(torch.float64).clone(), world
        dist.all_reduce(n)
    if min_count is not None:
        n = n.clamp_min(min_count)
    return total * scale / n.to(total.dtype)
