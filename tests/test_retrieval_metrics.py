"""retrieval_metrics against independent brute-force references (numpy, no shared code with the module).

Two references enumerate random tie-breaking exactly:
- tiny matrices: every permutation of the candidates is used as the tie-breaking priority (``np.lexsort``),
  so nothing about tie groups is assumed;
- medium matrices: candidates are sorted, and every placement of the GT items inside the GT's tie group is
  enumerated with ``itertools.combinations``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from vtp_bench.metrics import retrieval_metrics

KEYS = ("R@1", "R@5", "R@10", "MedR", "MeanR")


# --------------------------------------------------------------------------------------------------------------
# reference implementation
# --------------------------------------------------------------------------------------------------------------
def _positions_all_perms(scores: np.ndarray, is_gt: np.ndarray) -> np.ndarray:
    """0-based position of the first GT under every tie-breaking priority (all n! of them)."""
    n = len(scores)
    prio = np.array(list(itertools.permutations(range(n))))  # [n!, n]
    order = np.lexsort((prio, np.broadcast_to(-scores, prio.shape)), axis=-1)  # by score desc, then prio
    return np.argmax(is_gt[order], axis=1)


def _positions_combinations(scores: np.ndarray, is_gt: np.ndarray) -> np.ndarray:
    """Same distribution, enumerated as every placement of the GT items within the GT's tie group."""
    order = np.argsort(-scores, kind="stable")
    s, gt = scores[order], is_gt[order]
    first = int(np.argmax(gt))
    block = np.flatnonzero(s == s[first])
    lo, m, k = int(block[0]), len(block), int(gt[block].sum())
    return np.array([lo + min(c) for c in itertools.combinations(range(m), k)])


def _queries(sim: np.ndarray, t2v: np.ndarray, direction: str, v2t_mode: str):
    nt, nv = sim.shape
    if direction == "t2v":
        for i in range(nt):
            yield sim[i], np.arange(nv) == t2v[i]
    elif v2t_mode == "caption":
        for v in range(nv):
            yield sim[:, v], t2v == v
    else:
        for v in range(nv):
            grouped = np.array([max(sim[c, v] for c in range(nt) if t2v[c] == u) for u in range(nv)])
            yield grouped, np.arange(nv) == v


def reference(sim, t2v, *, v2t_mode="caption", ties="expected", median="numpy", ks=(1, 5, 10), enum="perms"):
    sim = np.asarray(sim, dtype=np.float64)
    t2v = np.asarray(t2v)
    positions = _positions_all_perms if enum == "perms" else _positions_combinations
    out = {}
    for direction in ("t2v", "v2t"):
        ranks, hits = [], {K: [] for K in ks}
        for scores, is_gt in _queries(sim, t2v, direction, v2t_mode):
            pos = positions(scores, is_gt)
            if ties == "optimistic":
                pos = np.array([pos.min()])
            ranks.append(pos.mean())
            for K in ks:
                hits[K].append((pos < K).mean())
        for K in ks:
            out[f"{direction}/R@{K}"] = 100.0 * float(np.mean(hits[K]))
        if median == "numpy":
            out[f"{direction}/MedR"] = float(np.median(ranks)) + 1
        else:
            out[f"{direction}/MedR"] = float(torch.median(torch.tensor(ranks, dtype=torch.float64))) + 1
        out[f"{direction}/MeanR"] = float(np.mean(ranks)) + 1
    return out


def assert_close(got: dict, want: dict, tol: float = 1e-9):
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=tol, abs=tol), f"{key}: got {got[key]}, want {value}"


def random_t2v(rng: np.random.Generator, num_videos: int, caps: list[int] | None = None) -> np.ndarray:
    """Uneven captions per video (every video has at least one), in shuffled text order."""
    if caps is None:
        caps = rng.integers(1, 5, size=num_videos).tolist()
    t2v = np.repeat(np.arange(num_videos), caps)
    return rng.permutation(t2v)


def argsort_ranks(sim: np.ndarray, t2v: np.ndarray, v2t_mode: str):
    """Exact ranks without ties, by sorting (double argsort)."""
    nt, nv = sim.shape
    pos_t = np.argsort(np.argsort(-sim, axis=1), axis=1)  # position of each video in each text's list
    r_t2v = pos_t[np.arange(nt), t2v]
    if v2t_mode == "caption":
        pos_v = np.argsort(np.argsort(-sim.T, axis=1), axis=1)  # [nv, nt]
        r_v2t = np.array([pos_v[v, t2v == v].min() for v in range(nv)])
    else:
        grouped = np.full((nv, nv), -np.inf)  # [query video, candidate video]
        for c in range(nt):
            grouped[:, t2v[c]] = np.maximum(grouped[:, t2v[c]], sim[c])
        pos_g = np.argsort(np.argsort(-grouped, axis=1), axis=1)
        r_v2t = pos_g[np.arange(nv), np.arange(nv)]
    return r_t2v, r_v2t


def metrics_from_ranks(prefix: str, ranks: np.ndarray) -> dict:
    out = {f"{prefix}/R@{K}": 100.0 * float(np.mean(ranks < K)) for K in (1, 5, 10)}
    out[f"{prefix}/MedR"] = float(np.median(ranks)) + 1
    out[f"{prefix}/MeanR"] = float(np.mean(ranks)) + 1
    return out


# --------------------------------------------------------------------------------------------------------------
# brute force with ties
# --------------------------------------------------------------------------------------------------------------
TINY_CAPS = [[1, 1, 1, 1], [3, 1, 2], [1, 2, 1, 2], [2, 2, 1, 1, 1], [1, 1, 1, 1, 1, 1]]


@pytest.mark.parametrize("v2t_mode", ["caption", "group"])
@pytest.mark.parametrize("ties", ["expected", "optimistic"])
@pytest.mark.parametrize("case", range(len(TINY_CAPS)))
def test_tiny_all_permutations(case, ties, v2t_mode):
    rng = np.random.default_rng(case)
    caps = TINY_CAPS[case]
    t2v = random_t2v(rng, len(caps), caps)
    ks = (1, 2, 3, 5)
    for trial in range(3):
        sim = rng.integers(0, 3 if trial < 2 else 2, size=(len(t2v), len(caps))).astype(np.float32)
        for median in ("numpy", "lower"):
            got = retrieval_metrics(torch.from_numpy(sim), torch.from_numpy(t2v), v2t_mode=v2t_mode, ties=ties,
                                    median=median, ks=ks)
            assert_close(got, reference(sim, t2v, v2t_mode=v2t_mode, ties=ties, median=median, ks=ks))


@pytest.mark.parametrize("v2t_mode", ["caption", "group"])
@pytest.mark.parametrize("seed", range(4))
def test_integer_ties_combinations(seed, v2t_mode):
    """torch.randint-valued scores: large tie groups, several tied own captions, uneven caption counts."""
    rng = np.random.default_rng(100 + seed)
    t2v = random_t2v(rng, 11)
    gen = torch.Generator().manual_seed(seed)
    sim = torch.randint(0, 2 + seed, (len(t2v), 11), generator=gen).float()
    for ties in ("expected", "optimistic"):
        got = retrieval_metrics(sim, torch.from_numpy(t2v), v2t_mode=v2t_mode, ties=ties)
        assert_close(got, reference(sim.numpy(), t2v, v2t_mode=v2t_mode, ties=ties, enum="combinations"))


def test_two_references_agree():
    """Guard on the references themselves: permutations and combinations give the same distribution."""
    rng = np.random.default_rng(7)
    for _ in range(20):
        scores = rng.integers(0, 2, size=6).astype(float)
        is_gt = np.zeros(6, bool)
        is_gt[rng.choice(6, size=rng.integers(1, 4), replace=False)] = True
        a, b = _positions_all_perms(scores, is_gt), _positions_combinations(scores, is_gt)
        assert a.mean() == pytest.approx(b.mean())
        for K in range(1, 7):
            assert (a < K).mean() == pytest.approx((b < K).mean())


@pytest.mark.parametrize("n", [1, 2, 4, 7, 10, 13])
def test_constant_matrix_scores_chance(n):
    sim = torch.full((n, n), 0.3)
    got = retrieval_metrics(sim, torch.arange(n))
    for d in ("t2v", "v2t"):
        for K in (1, 5, 10):
            assert got[f"{d}/R@{K}"] == pytest.approx(100.0 * min(K, n) / n, rel=1e-12)
        assert got[f"{d}/MeanR"] == pytest.approx((n + 1) / 2, rel=1e-12)
        assert got[f"{d}/MedR"] == pytest.approx((n + 1) / 2, rel=1e-12)
    assert retrieval_metrics(sim, torch.arange(n), v2t_mode="group") == got
    opt = retrieval_metrics(sim, torch.arange(n), ties="optimistic")
    assert opt["t2v/R@1"] == opt["v2t/R@1"] == 100.0 and opt["t2v/MedR"] == 1.0


def test_constant_matrix_several_captions():
    """12 texts, 4 videos x 3 captions. Caption-wise v2t: first of 3 GTs among 12 -> E[pos] = 9/4,
    P(pos < 1) = 3/12; group-wise: 4 equal videos -> E[pos] = 3/2, P = 1/4."""
    t2v = torch.arange(4).repeat_interleave(3)
    sim = torch.zeros(12, 4)
    cap = retrieval_metrics(sim, t2v)
    assert cap["v2t/R@1"] == pytest.approx(25.0) and cap["v2t/MeanR"] == pytest.approx(1 + 9 / 4)
    assert cap["v2t/R@5"] == pytest.approx(100.0 * (1 - math.comb(9, 5) / math.comb(12, 5)))
    grp = retrieval_metrics(sim, t2v, v2t_mode="group")
    assert grp["v2t/R@1"] == pytest.approx(25.0) and grp["v2t/MeanR"] == pytest.approx(2.5)
    assert cap["t2v/R@1"] == pytest.approx(25.0) and cap["t2v/num_queries"] == 12 and cap["v2t/num_queries"] == 4


# --------------------------------------------------------------------------------------------------------------
# no ties: exact ranks by sorting
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(50, 50), (200, 60), (1000, 300), (37, 37)])
@pytest.mark.parametrize("v2t_mode", ["caption", "group"])
def test_no_ties_matches_argsort(shape, v2t_mode):
    nt, nv = shape
    rng = np.random.default_rng(nt * 1000 + nv)
    # every video once, the remaining texts on random videos (uneven counts), shuffled
    t2v = rng.permutation(np.concatenate([np.arange(nv), rng.integers(0, nv, size=nt - nv)]))
    sim = rng.standard_normal((nt, nv))  # float64: no ties
    r_t, r_v = argsort_ranks(sim, t2v, v2t_mode)
    want = metrics_from_ranks("t2v", r_t) | metrics_from_ranks("v2t", r_v)
    for ties in ("expected", "optimistic"):
        got = retrieval_metrics(torch.from_numpy(sim), torch.from_numpy(t2v), v2t_mode=v2t_mode, ties=ties)
        assert_close(got, want, tol=1e-12)


def test_perfect_model():
    t2v = torch.arange(6).repeat_interleave(torch.tensor([1, 2, 3, 1, 2, 5]))
    sim = torch.nn.functional.one_hot(t2v, 6).float() + 0.01 * torch.rand(len(t2v), 6)
    for mode in ("caption", "group"):
        got = retrieval_metrics(sim, t2v, v2t_mode=mode)
        assert all(got[f"{d}/{k}"] == (100.0 if k.startswith("R@") else 1.0) for d in ("t2v", "v2t") for k in KEYS)


def test_group_equals_caption_with_one_caption_per_video():
    rng = np.random.default_rng(3)
    t2v = torch.from_numpy(rng.permutation(30))
    sim = torch.randint(0, 4, (30, 30)).float()
    assert retrieval_metrics(sim, t2v, v2t_mode="group") == retrieval_metrics(sim, t2v, v2t_mode="caption")


def test_caption_and_group_differ_with_several_captions():
    """Caption-wise v2t also ranks the other captions of a better video; group-wise ranks that video once.
    Video 0 has captions 0, 1; video 1 has caption 2. For video 1: captions 0, 1 score above its own caption."""
    sim = torch.tensor([[1.0, 0.9], [1.0, 0.8], [0.0, 0.5]])
    t2v = torch.tensor([0, 0, 1])
    cap = retrieval_metrics(sim, t2v, v2t_mode="caption")
    grp = retrieval_metrics(sim, t2v, v2t_mode="group")
    assert cap["v2t/MeanR"] == pytest.approx((1 + 3) / 2)  # video 1 ranks its caption 3rd of 3 texts
    assert grp["v2t/MeanR"] == pytest.approx((1 + 2) / 2)  # and 2nd of 2 videos
    assert cap["v2t/R@1"] == grp["v2t/R@1"] == 50.0


# --------------------------------------------------------------------------------------------------------------
# fixtures from specs/eval_protocols.md §1.6
# --------------------------------------------------------------------------------------------------------------
def test_fixture_gt_tied_with_one_other():
    sim, t2v = torch.tensor([[1.0, 1.0], [0.0, 1.0]]), torch.tensor([0, 1])
    opt = retrieval_metrics(sim, t2v, ties="optimistic")
    assert opt["t2v/R@1"] == 100.0 and opt["t2v/MedR"] == 1.0  # FiT t2v_metrics (optimistic)
    exp = retrieval_metrics(sim, t2v)
    assert exp["t2v/R@1"] == 75.0  # one query certain, one a coin flip (C4C compute_metrics: 66.7)
    # FiT v2t_metrics (averaged ties): MdR 1.25, which the expected rank reproduces. FiT's R@1 there is 50
    # because it tests `rank == 0` on the averaged rank 0.5; the expected hit rate is 75.
    assert exp["v2t/MedR"] == 1.25 and exp["v2t/R@1"] == 75.0


def test_fixture_all_constant_4x4():
    got = retrieval_metrics(torch.zeros(4, 4), torch.arange(4))
    assert got["t2v/R@1"] == 25.0 and got["t2v/MedR"] == 2.5  # as C4C compute_metrics (R@1 25, MdR 2.5)
    assert got["v2t/MedR"] == 2.5  # as FiT v2t_metrics (MdR 2.5)
    opt = retrieval_metrics(torch.zeros(4, 4), torch.arange(4), ties="optimistic")
    assert opt["t2v/R@1"] == 100.0 and opt["t2v/MedR"] == 1.0  # FiT t2v: R@1 100, MdR 1


def test_even_number_of_queries_median():
    """Ranks [0, 1]: numpy's median gives MdR 1.5, torch's lower median (C4C multi-sentence t2v) 1.0."""
    sim, t2v = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1])
    assert retrieval_metrics(sim, t2v)["t2v/MedR"] == 1.5
    assert retrieval_metrics(sim, t2v, median="lower")["t2v/MedR"] == 1.0
    assert retrieval_metrics(sim, t2v)["t2v/MeanR"] == 1.5


# --------------------------------------------------------------------------------------------------------------
# chunking, devices, inputs
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("v2t_mode", ["caption", "group"])
def test_chunking_invariance(v2t_mode):
    rng = np.random.default_rng(11)
    t2v = torch.from_numpy(random_t2v(rng, 23))
    sim = torch.randint(0, 5, (len(t2v), 23)).float()
    results = [retrieval_metrics(sim, t2v, v2t_mode=v2t_mode, chunk_size=c) for c in (1, 7, 10**6, None)]
    assert all(r == results[0] for r in results)


def test_input_not_mutated_and_layouts():
    rng = np.random.default_rng(5)
    t2v = torch.from_numpy(random_t2v(rng, 9))
    sim = torch.randint(0, 3, (len(t2v), 9)).float()
    sim[0, 1], sim[2, 3], sim[4, 4] = float("-inf"), float("inf"), float("-inf")
    sim_before, t2v_before = sim.clone(), t2v.clone()
    for mode in ("caption", "group"):
        a = retrieval_metrics(sim, t2v, v2t_mode=mode, chunk_size=2)
        b = retrieval_metrics(sim.T.contiguous().T, t2v, v2t_mode=mode)  # column-major input
        c = retrieval_metrics(sim.double(), t2v.int(), v2t_mode=mode)
        d = retrieval_metrics(sim.clone().requires_grad_(), t2v, v2t_mode=mode)
        assert a == b == c == d
        assert_close(a, reference(sim.numpy(), t2v.numpy(), v2t_mode=mode, enum="combinations"))
        assert all(type(v) is float for v in a.values())
    assert torch.equal(sim, sim_before) and torch.equal(t2v, t2v_before)


def test_integer_sim_is_scored():
    sim = torch.randint(0, 3, (8, 8))
    assert retrieval_metrics(sim, torch.arange(8)) == retrieval_metrics(sim.double(), torch.arange(8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("v2t_mode", ["caption", "group"])
def test_cuda_matches_cpu(v2t_mode):
    rng = np.random.default_rng(2)
    t2v = torch.from_numpy(random_t2v(rng, 40))
    sim = torch.randint(0, 6, (len(t2v), 40)).float()
    cpu = retrieval_metrics(sim, t2v, v2t_mode=v2t_mode)
    gpu = retrieval_metrics(sim.cuda(), t2v.cuda(), v2t_mode=v2t_mode, chunk_size=5)
    assert_close(gpu, cpu, tol=1e-12)


def test_validation_errors():
    sim, t2v = torch.rand(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    bad = sim.clone()
    bad[1, 2] = bad[4, 0] = bad[5, 1] = float("nan")
    with pytest.raises(ValueError, match="3 NaN"):
        retrieval_metrics(bad, t2v)
    with pytest.raises(ValueError, match="3 NaN"):
        retrieval_metrics(bad, t2v, chunk_size=1)
    both_inf = sim.clone()
    both_inf[0, 0], both_inf[0, 1] = float("inf"), float("-inf")  # row sum is NaN, yet no NaN
    retrieval_metrics(both_inf, t2v)
    with pytest.raises(ValueError, match=r"shape \[6\]"):
        retrieval_metrics(sim, t2v[:5])
    with pytest.raises(ValueError, match="2-D"):
        retrieval_metrics(sim[0], t2v[:1])
    with pytest.raises(ValueError, match="2 of 5 videos have no caption"):
        retrieval_metrics(torch.rand(6, 5), t2v)
    with pytest.raises(ValueError, match="outside"):
        retrieval_metrics(sim, torch.tensor([0, 1, 2, 0, 1, 3]))
    with pytest.raises(ValueError, match="outside"):
        retrieval_metrics(sim, torch.tensor([0, 1, 2, 0, 1, -1]))
    with pytest.raises(ValueError, match="integer"):
        retrieval_metrics(sim, t2v.float())
    with pytest.raises(ValueError, match="empty"):
        retrieval_metrics(torch.rand(0, 3), torch.zeros(0, dtype=torch.long))
    for kwargs in ({"v2t_mode": "video"}, {"ties": "average"}, {"median": "upper"}, {"chunk_size": 0},
                   {"ks": (0, 5)}):
        with pytest.raises(ValueError):
            retrieval_metrics(sim, t2v, **kwargs)


# --------------------------------------------------------------------------------------------------------------
# memory at scale
# --------------------------------------------------------------------------------------------------------------
def _vm_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


@pytest.mark.slow
def test_memory_50k_by_50k():
    """10 GB float32 input; the metric itself must stay under 2 GB of extra peak RSS (VmHWM, after resetting
    the high-water mark through /proc/self/clear_refs)."""
    pytest.importorskip("resource")
    n = 50_000
    try:
        sim = torch.empty(n, n, dtype=torch.float32)
    except RuntimeError:
        pytest.skip("cannot allocate the 10 GB input")
    sim.uniform_(generator=torch.Generator().manual_seed(0))
    sim.diagonal().add_(0.5)  # a decent model, so ranks are not all large
    caps5 = torch.arange(n) % (n // 5)  # 5 captions per video over 10,000 videos, for the group path
    for s, t2v, mode in ((sim, torch.arange(n), "caption"), (sim[:, : n // 5], caps5, "group")):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        before = _vm_kib("VmRSS")
        got = retrieval_metrics(s, t2v, v2t_mode=mode)
        extra_gib = (_vm_kib("VmHWM") - before) / 2**20
        assert extra_gib < 2.0, f"{mode}: {extra_gib:.2f} GiB extra"
        assert got["t2v/R@1"] > 0 and got["v2t/num_queries"] == s.shape[1]
