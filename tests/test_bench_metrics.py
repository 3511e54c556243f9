"""The block-wise retrieval metrics equal the matrix path, and the baselines of ``scripts/bench_metrics.py`` equal
our metrics on small cases, so the benchmark compares like with like."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vtp_bench.metrics import grounding_metrics, retrieval_metrics, retrieval_metrics_from_embeddings


def _script(name: str):
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_script_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _quantised(nt: int, nv: int, dim: int, levels: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings on a coarse grid (k / 4): every product and sum is exact in float32, and many scores tie."""
    g = torch.Generator().manual_seed(seed)
    video = torch.randint(-levels, levels + 1, (nv, dim), generator=g).float() / 4
    t2v = torch.cat([torch.randperm(nv, generator=g), torch.randint(0, nv, (nt - nv,), generator=g)])
    text = (video[t2v] + torch.randint(-1, 2, (nt, dim), generator=g).float()) / 4
    return text, video, t2v


@pytest.mark.parametrize("v2t_mode", ["caption", "group"])
@pytest.mark.parametrize("ties", ["expected", "optimistic"])
@pytest.mark.parametrize("chunk_size", [None, 1, 7])
def test_blocks_equal_matrix_path(v2t_mode, ties, chunk_size):
    text, video, t2v = _quantised(nt=53, nv=31, dim=3, levels=1, seed=0)
    sim = text @ video.T
    assert (sim[:, :, None] == sim[:, None, :]).sum() > sim.numel() * 3  # many ties
    want = retrieval_metrics(sim, t2v, v2t_mode=v2t_mode, ties=ties)
    got = retrieval_metrics_from_embeddings(text, video, t2v, v2t_mode=v2t_mode, ties=ties, chunk_size=chunk_size)
    assert got == want  # bit-identical


@pytest.mark.parametrize("seed", range(3))
def test_blocks_equal_matrix_path_random(seed):
    text, video, t2v = _quantised(nt=400, nv=300, dim=8, levels=3, seed=seed)
    for mode in ("caption", "group"):
        want = retrieval_metrics(text @ video.T, t2v, v2t_mode=mode, median="lower", ks=(1, 3, 50))
        got = retrieval_metrics_from_embeddings(text, video, t2v, v2t_mode=mode, median="lower", ks=(1, 3, 50),
                                                chunk_size=64)
        assert got == want


def test_blocks_constant_embeddings_score_chance():
    n = 20
    m = retrieval_metrics_from_embeddings(torch.ones(n, 4), torch.ones(n, 4), torch.arange(n), chunk_size=3)
    assert m["t2v/R@1"] == pytest.approx(100 / n) and m["v2t/R@1"] == pytest.approx(100 / n)


def test_blocks_errors():
    with pytest.raises(ValueError, match="same D"):
        retrieval_metrics_from_embeddings(torch.ones(3, 4), torch.ones(3, 5), torch.arange(3))
    with pytest.raises(ValueError, match="no caption"):
        retrieval_metrics_from_embeddings(torch.ones(3, 4), torch.ones(4, 4), torch.arange(3))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics_from_embeddings(torch.full((3, 4), float("nan")), torch.ones(3, 4), torch.arange(3))


@pytest.mark.parametrize("seed", range(3))
def test_sort_baseline_equals_ours(seed):
    """Continuous random embeddings (no ties at a GT score): the argsort baseline gives our numbers."""
    bench = _script("bench_metrics")
    g = torch.Generator().manual_seed(seed)
    video = F.normalize(torch.randn(150, 16, generator=g, dtype=torch.float64), dim=1)
    t2v = torch.cat([torch.randperm(150, generator=g), torch.randint(0, 150, (90,), generator=g)])
    text = F.normalize(video[t2v] + 0.7 * torch.randn(240, 16, generator=g, dtype=torch.float64), dim=1)
    want = retrieval_metrics_from_embeddings(text, video, t2v)
    got = bench.sort_retrieval(text, video, t2v, block=37)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-9), k


@pytest.mark.parametrize("side", [12, 20])  # 78 and 210 candidates: past each NMS prefix of grounding_metrics
def test_loop_grounding_equals_ours(side):
    bench = _script("bench_metrics")
    cands, scores, gt = bench.grounding_inputs(300, side, seed=1)
    scores[:, ::5] = 0.5  # ties: both must keep the input order
    want = grounding_metrics(cands, scores, gt)
    got = bench.loop_grounding(cands, scores, gt)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-9), k
    assert 0 < want["R@1,IoU=0.5"] < 100
