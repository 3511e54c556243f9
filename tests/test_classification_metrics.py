"""zeroshot_metrics against a hand computation and an independent brute force over every tie-breaking order."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from vtp_bench.metrics import PROMPT_TEMPLATE, class_prompts, zeroshot_metrics


def brute_force(sim, labels, ks=(1, 5), optimistic=False):
    """Each video's class ranking under every permutation used as tie-breaking priority (all C! of them)."""
    sim = np.asarray(sim, dtype=np.float64)
    labels = np.asarray(labels)
    nv, nc = sim.shape
    prios = np.array(list(itertools.permutations(range(nc))))
    hits = {k: [] for k in ks}
    for v in range(nv):
        order = np.lexsort((prios, np.broadcast_to(-sim[v], prios.shape)), axis=-1)
        pos = np.argmax(order == labels[v], axis=1)
        if optimistic:
            pos = np.array([pos.min()])
        for k in ks:
            hits[k].append((pos < k).mean())
    out = {f"top{k}": 100 * float(np.mean(hits[k])) for k in ks}
    per_class = [np.mean([hits[1][v] for v in range(nv) if labels[v] == c]) for c in range(nc) if (labels == c).any()]
    out["mean_class_acc"] = 100 * float(np.mean(per_class))
    return out


def test_hand_made_matrix_with_ties():
    # 4 videos x 3 classes; labels [0, 1, 2, 2]
    sim = torch.tensor([
        [0.9, 0.1, 0.2],  # class 0 strictly first: top1 hit
        [0.5, 0.5, 0.1],  # class 1 tied with class 0 for first: top1 = 1/2
        [0.3, 0.3, 0.3],  # all tied: top1 = 1/3
        [0.8, 0.7, 0.1],  # class 2 last: top1 miss, top2 miss, top3 hit
    ])
    labels = torch.tensor([0, 1, 2, 2])
    out = zeroshot_metrics(sim, labels, topk=(1, 2, 3))
    assert set(out) == {"top1", "top2", "top3", "mean_class_acc"}
    assert out["top1"] == pytest.approx(100 * (1 + 1 / 2 + 1 / 3 + 0) / 4)
    assert out["top2"] == pytest.approx(100 * (1 + 1 + 2 / 3 + 0) / 4)
    assert out["top3"] == pytest.approx(100.0)
    # per class: class 0: 1; class 1: 1/2; class 2: (1/3 + 0) / 2
    assert out["mean_class_acc"] == pytest.approx(100 * (1 + 1 / 2 + 1 / 6) / 3)
    opt = zeroshot_metrics(sim, labels, topk=(1,), ties="optimistic")
    assert opt["top1"] == pytest.approx(100 * 3 / 4)


def test_default_keys_and_a_collapsed_model_scores_chance():
    sim = torch.zeros(20, 9)  # every class the same score
    labels = torch.arange(20) % 9
    out = zeroshot_metrics(sim, labels)
    assert set(out) == {"top1", "top5", "mean_class_acc"}
    assert out["top1"] == pytest.approx(100 / 9) and out["top5"] == pytest.approx(500 / 9)
    assert out["mean_class_acc"] == pytest.approx(100 / 9)
    assert zeroshot_metrics(sim, labels, ties="optimistic")["top1"] == 100.0  # what optimistic ties would give


@pytest.mark.parametrize("seed", range(6))
def test_random_matrices_with_many_ties_equal_the_brute_force(seed):
    rng = np.random.default_rng(seed)
    nv, nc = 12, 5
    sim = rng.integers(0, 3, size=(nv, nc)).astype(np.float32)  # values in {0, 1, 2}: ties everywhere
    labels = rng.integers(0, nc - 1, size=nv)  # the last class has no video: it is left out of the class mean
    for optimistic in (False, True):
        ref = brute_force(sim, labels, ks=(1, 2, 5), optimistic=optimistic)
        got = zeroshot_metrics(torch.from_numpy(sim), torch.from_numpy(labels), topk=(1, 2, 5),
                               ties="optimistic" if optimistic else "expected")
        assert got == pytest.approx(ref, abs=1e-9)


def test_orientation_and_inputs_are_checked():
    sim = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"labels must have shape \[4\]"):
        zeroshot_metrics(sim, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="outside the 3 classes"):
        zeroshot_metrics(sim, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="integer class indices"):
        zeroshot_metrics(sim, torch.tensor([0.0, 1, 2, 0]))
    bad = sim.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="1 NaN"):
        zeroshot_metrics(bad, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="topk"):
        zeroshot_metrics(sim, torch.tensor([0, 1, 2, 0]), topk=(0,))
    before = sim.clone()
    zeroshot_metrics(sim, [0, 1, 2, 0])  # a list of labels works, and sim is not modified
    assert torch.equal(sim, before)


def test_prompts():
    assert PROMPT_TEMPLATE == "{}"
    assert class_prompts(["brush hair", "ride bike"]) == ["brush hair", "ride bike"]
    assert class_prompts(["moves left"], "synth_object") == ["an object moves left"]
    assert class_prompts(["jump"], "a person doing {}") == ["a person doing jump"]
    with pytest.raises(ValueError, match="exactly one"):
        class_prompts(["x"], "no placeholder")
