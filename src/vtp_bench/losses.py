"""Contrastive losses and the cross-rank gather they use.

``gather="global"`` follows open_clip's local-loss + gather-with-grad semantics: every rank gathers the
other ranks' embeddings *with* gradient (the backward of ``torch.distributed.nn.all_gather`` sums the
gradients of every rank's loss into the owner's slice) and scores only its own rows against all columns.
DDP's gradient averaging then yields exactly the single-process gradient of the mean loss over the
global batch. The anchors' "slice-only" gather (backward keeps only the local slice, no reduction) gets
the scale wrong with a global loss and the direction wrong with a local one (specs/ecosystem.md §2.1).

``gather="none"`` keeps per-GPU negatives only, as methods trained without a gather did.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

GATHER_MODES = ("global", "none")


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: Tensor, mode: str) -> tuple[Tensor, int]:
    """Concatenate ``x`` [B, ...] over ranks (rank order); returns (all, offset of this rank's rows).

    Every rank must hold the same batch size (the DataModule drops the last incomplete batch in training).
    """
    if mode not in GATHER_MODES:
        raise ValueError(f"loss.gather must be one of {GATHER_MODES}, got {mode!r}")
    rank, world = _world()
    if mode == "none" or world == 1:
        return x, 0
    try:  # autograd-aware all-gather: its backward reduce-scatters (sums) every rank's gradient
        from torch.distributed._functional_collectives import all_gather_tensor_autograd

        gathered = all_gather_tensor_autograd(x.contiguous(), gather_dim=0, group=dist.group.WORLD)
    except ImportError:  # older torch
        import torch.distributed.nn.functional as dist_fn

        gathered = torch.cat(dist_fn.all_gather(x), dim=0)
    return gathered, rank * x.shape[0]


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
    all_t, offset = gather_with_grad(t, gather)
    all_v, _ = gather_with_grad(v, gather)
    labels = torch.arange(t.shape[0], device=t.device) + offset
    t2v = F.cross_entropy(t @ all_v.t() / temperature, labels)
    v2t = F.cross_entropy(v @ all_t.t() / temperature, labels)
    return {"t2v": t2v, "v2t": v2t}
