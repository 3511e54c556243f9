"""Temporal grounding metrics: hand cases at the thresholds, a per-query loop reference, and the numbers the
official evaluation functions gave on the same inputs.

Official numbers: LocVTP ``clip/data/datasets/evaluation.py: evaluate`` (snapshot 229bef6, torch) and 2D-TAN
``lib/core/eval.py: eval`` (snapshot 2f7410f, numpy; TIOU 0.1,0.3,0.5,0.7, RECALL 1,5, NMS_THRESH 0.5), run in a
throw-away directory with their imports stubbed, on the inputs ``_random_case`` / ``_tie_case`` build: candidates
are every upper-triangular cell (i, j) of an N x N score map as the moment [i d / N, (j + 1) d / N] (LocVTP's
``score2d_to_moments_scores``), ranked by score for 2D-TAN.
"""

from __future__ import annotations

import pytest
import torch

from vtp_bench.metrics import grounding_metrics
from vtp_bench.metrics.grounding import moment_iou

KEYS = [f"R@{r},IoU={m}" for r in (1, 5) for m in (0.1, 0.3, 0.5, 0.7)]


def _grid(score2d: torch.Tensor, duration: float) -> tuple[torch.Tensor, torch.Tensor]:
    n = score2d.shape[-1]
    i, j = torch.triu_indices(n, n)
    cands = torch.stack([i.double() * duration / n, (j + 1).double() * duration / n], dim=1)
    return cands, score2d[i, j].double()


def _random_case():
    """40 queries, 8 x 8 maps with distinct positive scores (LocVTP drops zero-score cells), random GT."""
    g = torch.Generator().manual_seed(0)
    cands, scores, gts = [], [], []
    for _ in range(40):
        m = torch.triu(torch.rand(8, 8, generator=g) + 0.01)
        d = float(torch.randint(20, 60, (1,), generator=g)) / 2
        s = float(torch.rand(1, generator=g)) * d * 0.8
        e = s + float(torch.rand(1, generator=g)) * (d - s)
        c, sc = _grid(m, d)
        cands.append(c), scores.append(sc), gts.append([s, e])
    return torch.stack(cands), torch.stack(scores), torch.tensor(gts, dtype=torch.float64)


# 1-s cells of a 10-s video; the top cell(s) get scores 5 / 4, every other cell a tiny distinct score
TIE_CASES = [
    ([(0, 0, 5.0)], [0.0, 10.0]),  # top-1 [0, 1] vs [0, 10]: IoU exactly 0.1
    ([(0, 2, 5.0)], [0.0, 10.0]),  # [0, 3]: exactly 0.3
    ([(0, 4, 5.0)], [0.0, 10.0]),  # [0, 5]: exactly 0.5
    ([(0, 6, 5.0)], [0.0, 10.0]),  # [0, 7]: exactly 0.7
    ([(0, 1, 5.0), (0, 3, 4.0)], [0.0, 4.0]),  # [0, 2] then [0, 4]: NMS IoU exactly 0.5, so [0, 4] is kept
    ([(0, 1, 5.0), (0, 2, 4.0)], [0.0, 3.0]),  # [0, 2] then [0, 3]: NMS IoU 2/3, [0, 3] suppressed
]


def _tie_case(cells):
    n = 10
    m = torch.triu(torch.arange(1, n * n + 1, dtype=torch.float64).view(n, n)) * 1e-3 / (n * n)
    for i, j, s in cells:
        m[i, j] = s
    return _grid(m, 10.0)


def _tie_inputs(cases=TIE_CASES):
    parts = [_tie_case(c) for c, _ in cases]
    return (torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts]),
            torch.tensor([g for _, g in cases], dtype=torch.float64))


# what LocVTP's evaluate and 2D-TAN's eval printed (percent; LocVTP rounds to 2 decimals, computes no mIoU)
OFFICIAL_RANDOM = dict(zip(KEYS, [47.5, 32.5, 12.5, 2.5, 87.5, 70.0, 47.5, 25.0]), mIoU=19.70651862595042)
OFFICIAL_TIES = dict(zip(KEYS, [83.33333333333334, 66.66666666666666, 33.33333333333333, 0.0,
                                100.0, 66.66666666666666, 50.0, 16.666666666666664]), mIoU=46.11111111111111)
OFFICIAL_TIES_PER_CASE = [  # R@1 at 0.1/0.3/0.5/0.7, R@5 at the same, mIoU
    ([0, 0, 0, 0], [100, 0, 0, 0], 10.0),
    ([100, 0, 0, 0], [100, 0, 0, 0], 30.0),
    ([100, 100, 0, 0], [100, 100, 0, 0], 50.0),
    ([100, 100, 100, 0], [100, 100, 100, 0], 70.0),
    ([100, 100, 0, 0], [100, 100, 100, 100], 50.0),
    ([100, 100, 100, 0], [100, 100, 100, 0], 66.66666666666666),
]


def _loop_reference(cands, scores, gt, nms_thresh=0.5, recalls=(1, 5), ious=(0.1, 0.3, 0.5, 0.7)):
    """Per query, in plain Python: stable ranking, greedy NMS (suppress IoU > thresh), strict hits."""
    def iou(a, b):
        inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
        span = max(a[1], b[1]) - min(a[0], b[0])
        return inter / span if span > 0 else 0.0

    hits = {(r, m): 0 for r in recalls for m in ious}
    miou = 0.0
    for c, s, g in zip(cands.tolist(), scores.tolist(), gt.tolist()):
        order = sorted(range(len(s)), key=lambda k: -s[k])  # Python's sort is stable
        kept = []
        for k in order:
            if all(iou(c[k], c[j]) <= nms_thresh for j in kept):
                kept.append(k)
        ov = [iou(c[k], g) for k in kept]
        miou += ov[0]
        for r in recalls:
            for m in ious:
                hits[(r, m)] += any(o > m for o in ov[:r])
    q = len(gt)
    out = {f"R@{r},IoU={m:g}": 100.0 * hits[(r, m)] / q for r in recalls for m in ious}
    out["mIoU"] = 100.0 * miou / q
    return out


def test_official_numbers_random_maps():
    res = grounding_metrics(*_random_case())
    assert list(res) == KEYS + ["mIoU"]
    for k, v in OFFICIAL_RANDOM.items():
        assert res[k] == pytest.approx(v, abs=1e-9), k


def test_official_numbers_exact_ties():
    res = grounding_metrics(*_tie_inputs())
    for k, v in OFFICIAL_TIES.items():
        assert res[k] == pytest.approx(v, abs=1e-9), k
    for case, (r1, r5, miou) in zip(TIE_CASES, OFFICIAL_TIES_PER_CASE):
        one = grounding_metrics(*_tie_inputs([case]))
        assert [one[f"R@1,IoU={m}"] for m in (0.1, 0.3, 0.5, 0.7)] == r1, case
        assert [one[f"R@5,IoU={m}"] for m in (0.1, 0.3, 0.5, 0.7)] == r5, case
        assert one["mIoU"] == pytest.approx(miou), case


def test_iou_exactly_at_threshold_is_a_miss():
    cands = torch.tensor([[[0.0, 1.0]], [[0.0, 3.0]], [[0.0, 5.0]], [[0.0, 7.0]]], dtype=torch.float64)
    res = grounding_metrics(cands, torch.ones(4, 1), torch.tensor([[0.0, 10.0]] * 4), recalls=(1,))
    # IoUs 0.1, 0.3, 0.5, 0.7: each query hits only the thresholds strictly below its IoU
    assert [res[f"R@1,IoU={m}"] for m in (0.1, 0.3, 0.5, 0.7)] == [75.0, 50.0, 25.0, 0.0]
    assert res["mIoU"] == pytest.approx(40.0)


def test_nms_exactly_at_threshold_keeps():
    # [0, 2] first; [0, 4] overlaps it by exactly 0.5 (kept), [0, 3] by 2/3 (suppressed), [5, 9] is disjoint
    cands = torch.tensor([[[0.0, 2.0], [0.0, 3.0], [0.0, 4.0], [5.0, 9.0]]], dtype=torch.float64)
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    res = grounding_metrics(cands, scores, torch.tensor([[0.0, 4.0]]), recalls=(1, 2), ious=(0.7,))
    assert res["R@1,IoU=0.7"] == 0.0 and res["R@2,IoU=0.7"] == 100.0  # [0, 4] is the 2nd kept moment
    res = grounding_metrics(cands, scores, torch.tensor([[0.0, 3.0]]), recalls=(2,), ious=(0.9,))
    assert res["R@2,IoU=0.9"] == 0.0  # [0, 3] (IoU 1) was suppressed, [0, 4] has IoU 0.75
    res = grounding_metrics(cands, scores, torch.tensor([[0.0, 3.0]]), nms_thresh=0.7, recalls=(2,), ious=(0.9,))
    assert res["R@2,IoU=0.9"] == 100.0  # with a looser NMS it survives


def test_ties_in_score_keep_input_order_and_no_clipping():
    cands = torch.tensor([[[0.0, 1.0], [0.0, 12.0]]], dtype=torch.float64)  # ends after a 10-s video: not clipped
    gt = torch.tensor([[0.0, 12.0]])
    assert grounding_metrics(cands, torch.tensor([[1.0, 1.0]]), gt, recalls=(1,))["mIoU"] == pytest.approx(100 / 12)
    assert grounding_metrics(cands.flip(1), torch.tensor([[1.0, 1.0]]), gt, recalls=(1,))["mIoU"] == 100.0


def test_matches_a_per_query_loop_on_random_inputs():
    g = torch.Generator().manual_seed(3)
    q, k = 37, 23
    start = torch.rand(q, k, generator=g, dtype=torch.float64) * 20
    cands = torch.stack([start, start + torch.rand(q, k, generator=g, dtype=torch.float64) * 10], -1)
    scores = torch.randint(0, 6, (q, k), generator=g).double()  # many score ties
    gs = torch.rand(q, generator=g, dtype=torch.float64) * 20
    gt = torch.stack([gs, gs + 1 + torch.rand(q, generator=g, dtype=torch.float64) * 8], -1)
    for thresh in (0.3, 0.5):
        ours = grounding_metrics(cands, scores, gt, nms_thresh=thresh, recalls=(1, 3, 5))
        ref = _loop_reference(cands, scores, gt, nms_thresh=thresh, recalls=(1, 3, 5))
        assert ours.keys() == ref.keys()
        for key in ref:
            assert ours[key] == pytest.approx(ref[key], abs=1e-9), (thresh, key)


def test_chunking_and_fewer_kept_than_recall(monkeypatch):
    import vtp_bench.metrics.grounding as gm

    cands, scores, gt = _random_case()
    whole = grounding_metrics(cands, scores, gt)
    monkeypatch.setattr(gm, "_CHUNK_ELEMENTS", 50)  # 1 query per chunk
    assert grounding_metrics(cands, scores, gt) == whole
    # one candidate per query: R@5 uses the one there is
    res = grounding_metrics(torch.tensor([[[0.0, 2.0]]]), torch.tensor([[1.0]]), torch.tensor([[0.0, 2.5]]))
    assert res["R@5,IoU=0.7"] == 100.0 and res["R@1,IoU=0.7"] == 100.0


def test_iou_formula_and_bad_input():
    a = torch.tensor([[0.0, 2.0], [3.0, 4.0], [1.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 3.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    assert moment_iou(a, b).tolist() == [pytest.approx(1 / 3), 0.0, 0.0]
    with pytest.raises(ValueError, match=r"candidates must be \[Q, K, 2\]"):
        grounding_metrics(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="scores must be"):
        grounding_metrics(torch.zeros(2, 3, 2), torch.zeros(2, 4), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="gt must be"):
        grounding_metrics(torch.zeros(2, 3, 2), torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="NaN"):
        grounding_metrics(torch.zeros(1, 1, 2), torch.tensor([[float("nan")]]), torch.zeros(1, 2))
