"""Re-ranking (metrics/rerank.py) against per-element hand computations, and a hubness case it is known to fix."""

import math

import pytest
import torch

from vtp_bench.metrics import retrieval_metrics
from vtp_bench.metrics.rerank import dual_softmax, hub_videos, qbnorm


def _loop_dual_softmax(s, tau, dim):
    n, m = len(s), len(s[0])
    out = [[0.0] * m for _ in range(n)]
    for i in range(n):
        for j in range(m):
            if dim == 0:
                z = sum(math.exp(s[a][j] / tau) for a in range(n))
            else:
                z = sum(math.exp(s[i][b] / tau) for b in range(m))
            out[i][j] = s[i][j] * math.exp(s[i][j] / tau) / z
    return out


def _loop_qbnorm(s, bank, beta, k):
    m = len(s[0])
    hubs = set()
    for row in bank:
        order = sorted(range(m), key=lambda j: -row[j])
        hubs |= set(order[:k])
    out = []
    for row in s:
        top = max(range(m), key=lambda j: row[j])
        if top in hubs:
            out.append([math.exp(beta * row[j]) / sum(math.exp(beta * b[j]) for b in bank) for j in range(m)])
        else:
            out.append(list(row))
    return out


@pytest.mark.parametrize("dim", [0, 1])
def test_dual_softmax_matches_loop(dim):
    g = torch.Generator().manual_seed(0)
    s = torch.rand(5, 4, generator=g, dtype=torch.float64) * 2 - 1
    got = dual_softmax(s, 0.3, dim=dim)
    assert torch.allclose(got, torch.tensor(_loop_dual_softmax(s.tolist(), 0.3, dim), dtype=torch.float64))
    with pytest.raises(ValueError, match="temperature"):
        dual_softmax(s, 0.0)


@pytest.mark.parametrize("k", [1, 2])
def test_qbnorm_matches_loop(k):
    g = torch.Generator().manual_seed(1)
    s = torch.rand(6, 5, generator=g, dtype=torch.float64)
    bank = torch.rand(7, 5, generator=g, dtype=torch.float64)
    got = qbnorm(s, bank, beta=3.0, k=k)
    want = torch.tensor(_loop_qbnorm(s.tolist(), bank.tolist(), 3.0, k), dtype=torch.float64)
    assert torch.allclose(got, want)
    # some rows normalised and some kept raw, so both branches are exercised
    hubs = set(hub_videos(bank, k).tolist())
    tops = s.argmax(1).tolist()
    assert any(t in hubs for t in tops) and (k == 2 or any(t not in hubs for t in tops))
    with pytest.raises(ValueError, match="querybank"):
        qbnorm(s, bank[:, :3])


def test_reranking_fixes_a_hub():
    """Video 3 is every query's nearest video (a hub): raw t2v R@1 is 25%; both re-rankings recover 100%."""
    s = torch.tensor([[0.5, 0.1, 0.1, 0.6], [0.1, 0.5, 0.1, 0.6], [0.1, 0.1, 0.5, 0.6], [0.1, 0.1, 0.1, 0.7]])
    gt = torch.arange(4)
    assert retrieval_metrics(s, gt)["t2v/R@1"] == 25.0
    assert retrieval_metrics(dual_softmax(s, 0.1, dim=0), gt)["t2v/R@1"] == 100.0
    bank = torch.tensor([[0.2, 0.1, 0.1, 0.6], [0.1, 0.2, 0.1, 0.6], [0.1, 0.1, 0.2, 0.6], [0.1, 0.1, 0.1, 0.6]])
    assert hub_videos(bank).tolist() == [3]
    assert retrieval_metrics(qbnorm(s, bank, beta=20.0), gt)["t2v/R@1"] == 100.0
    # a bank that does not find the hub leaves the raw ranking alone
    calm = torch.eye(4)[:3] * 0.5  # its top-1s are videos 0-2, never the hub
    assert torch.equal(qbnorm(s, calm, beta=20.0), s.double())
