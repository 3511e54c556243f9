import math

import torch

from vtp_bench.losses import norm_softmax_loss


def _brute(t, v, tau):
    t = [x / x.norm() for x in t.double()]
    v = [x / x.norm() for x in v.double()]
    n = len(t)
    s = [[float(t[i] @ v[j]) / tau for j in range(n)] for i in range(n)]
    t2v = -sum(s[i][i] - math.log(sum(math.exp(s[i][j]) for j in range(n))) for i in range(n)) / n
    v2t = -sum(s[j][j] - math.log(sum(math.exp(s[i][j]) for i in range(n))) for j in range(n)) / n
    return t2v, v2t


def test_norm_softmax_matches_closed_form():
    g = torch.Generator().manual_seed(0)
    t, v = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    out = norm_softmax_loss(t, v, 0.05)
    bt, bv = _brute(t, v, 0.05)
    assert abs(out["t2v"].item() - bt) < 1e-4
    assert abs(out["v2t"].item() - bv) < 1e-4


def test_gather_none_equals_global_in_one_process():
    t, v = torch.randn(5, 4), torch.randn(5, 4)
    a, b = norm_softmax_loss(t, v, gather="none"), norm_softmax_loss(t, v, gather="global")
    assert torch.equal(a["t2v"], b["t2v"]) and torch.equal(a["v2t"], b["v2t"])
