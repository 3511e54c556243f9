"""Post-hoc re-ranking of a retrieval similarity matrix: dual softmax and QB-Norm.

Both are *extras*: the raw scores stay the primary numbers of every table, and a re-ranked result is labelled.

- Dual softmax (CAMoE / DSL, as InternVideo's ``sim * softmax(sim, dim=0)``): each score is weighted by a prior,
  the softmax of the scores over the *other side* of the matrix. For text-to-video the prior of video j for text i is
  softmax over the test texts of column j, so a "hub" video that is close to every text is damped. Transductive: it
  uses every test query at once.
- QB-Norm (Bogolin et al., dynamic inverted softmax): a querybank of *training* captions is scored against the test
  videos; the videos that are some bank query's top-k are "hubs". A test query whose top-1 is a hub gets its row
  replaced by ``exp(beta*s_ij) / sum_b exp(beta*B_bj)`` (the bank's mass on video j); the other rows keep their raw
  scores. Rows only: it re-ranks text-to-video and is applied to that direction only.
"""

from __future__ import annotations

import torch
from torch import Tensor

RERANKERS = ("none", "dual_softmax", "qbnorm")


def dual_softmax(sim: Tensor, temperature: float = 0.01, dim: int = 0) -> Tensor:
    """``sim * softmax(sim / temperature, dim)``. On a [texts, videos] matrix, ``dim=0`` (softmax over the texts of
    each video) re-ranks text-to-video, ``dim=1`` (over the videos of each text) video-to-text. The temperature is
    on the method's similarity (cosine for every method here): 0.01 = CLIP's logit scale of 100."""
    if temperature <= 0:
        raise ValueError(f"dual softmax temperature must be > 0, got {temperature}")
    s = sim.double()
    return s * torch.softmax(s / temperature, dim=dim)


def hub_videos(bank_sim: Tensor, k: int = 1) -> Tensor:
    """Indices of the videos that are among the top-k of at least one querybank row (bank_sim: [bank, videos])."""
    k = min(k, bank_sim.shape[1])
    return torch.unique(bank_sim.topk(k, dim=1).indices.reshape(-1))


def qbnorm(sim: Tensor, bank_sim: Tensor, beta: float = 20.0, k: int = 1) -> Tensor:
    """QB-Norm with the dynamic inverted softmax. ``sim``: [test texts, videos]; ``bank_sim``: [bank texts, videos]
    (training captions against the same test videos). Returns float64; rows whose top-1 is not a hub are the raw
    scores. Computed as ``exp(beta*s - logsumexp_b(beta*B))`` so large scores do not overflow."""
    if bank_sim.ndim != 2 or bank_sim.shape[1] != sim.shape[1]:
        raise ValueError(f"querybank similarities must be [bank, {sim.shape[1]} videos], got {tuple(bank_sim.shape)}")
    if bank_sim.shape[0] == 0:
        raise ValueError("QB-Norm needs a non-empty querybank (training captions)")
    s, b = sim.double(), bank_sim.double()
    hubs = hub_videos(b, k)
    normalise = torch.isin(s.argmax(dim=1), hubs)
    log_mass = torch.logsumexp(beta * b, dim=0)  # [videos]
    out = s.clone()
    out[normalise] = torch.exp(beta * s[normalise] - log_mass)
    return out
