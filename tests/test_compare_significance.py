"""``vtp-bench compare`` with per-item outcomes: intervals in every cell, bold for the rows not significantly worse
than the best (paired permutation test, Holm), seeds folded into one row, cost columns. Expected marks are computed
here by brute force (every sign pattern enumerated) and Holm's procedure written out."""

from __future__ import annotations

import csv
import io
import itertools
import json

import numpy as np
import pytest

from vtp_bench.cli import main
from vtp_bench.report import format_table
from vtp_bench.report.stats import bootstrap_ci, hierarchical_bootstrap_ci


def _result(method: str, hits, *, seed=None, experiment=None, version="v0", ids=None, ranks=None, cost=None) -> dict:
    """A retrieval result whose t2v R@1 (and MedR, when ``ranks`` is given) come from per-item outcomes."""
    hits = [100.0 * float(h) for h in hits]
    ids = ids or [f"q{i}" for i in range(len(hits))]
    experiment = experiment or f"{method}_x"
    metrics = {"t2v/R@1": float(np.mean(hits))}
    per_query = {"t2v/R@1": hits, "t2v/ids": ids}
    if ranks is not None:
        metrics["t2v/MedR"] = float(np.median(ranks))
        per_query["t2v/rank"] = [float(r) for r in ranks]
    r = {"method": method, "experiment": experiment, "checkpoint": f"runs/{experiment}/{version}/checkpoints/last.ckpt",
         "dataset": "synth", "split": "test", "task": "retrieval", "num_queries": len(hits), "num_videos": len(hits),
         "frames": 4, "sampler": "uniform", "decoder": "pyav", "img_size": 64, "decode_size": None,
         "manifest_sha256": "ab" * 32, "checkpoint_load": {},
         "protocol": {"name": "vtp_bench", "v2t": "caption", "exclude": [], "excluded": [], "rerank": {"name": "none"}},
         "metrics": metrics, "per_query": per_query, "seed": seed, "run_version": version}
    if cost is not None:
        r["cost"] = cost
    return r


def _rows(md: str) -> dict[str, dict[str, str]]:
    lines = [[c.strip() for c in line.strip().strip("|").split("|")] for line in md.splitlines()
             if line.startswith("|")]
    head, body = lines[0], lines[2:]
    return {f"{r[0]} {r[1]}": dict(zip(head, r)) for r in body}


def _bold(cell: str) -> bool:
    return cell.startswith("**") and cell.endswith("**")


def _outcomes(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    return (rng.random(n) < p).astype(float)


def test_five_point_gap_on_100_items_bolds_both():
    rng = np.random.default_rng(0)
    a = _outcomes(rng, 100, 0.45)
    b = a.copy()
    b[np.flatnonzero(a)[:5]] = 0  # 5 points lower on the same items
    rows = _rows(format_table([_result("a", a), _result("b", b)]))
    assert _bold(rows["a a_x/v0/last"]["t2v R@1"]) and _bold(rows["b b_x/v0/last"]["t2v R@1"])


def test_twenty_point_gap_on_1000_items_bolds_one():
    rng = np.random.default_rng(1)
    a, b = _outcomes(rng, 1000, 0.50), _outcomes(rng, 1000, 0.30)
    rows = _rows(format_table([_result("a", a), _result("b", b)]))
    assert _bold(rows["a a_x/v0/last"]["t2v R@1"]) and not _bold(rows["b b_x/v0/last"]["t2v R@1"])


def _exact_p(a: np.ndarray, b: np.ndarray) -> float:
    d = a - b
    obs = abs(d.sum())
    total = [abs(sum(s * x for s, x in zip(signs, d))) >= obs - 1e-9 for signs in itertools.product((1, -1),
                                                                                                   repeat=len(d))]
    return sum(total) / len(total)


def _holm(p: list[float]) -> list[float]:
    order = sorted(range(len(p)), key=lambda i: p[i])
    adj, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adj[i] = running
    return adj


def test_marks_equal_a_hand_computation():
    """Five rows on 12 shared items (exact tests): the bold rows are the best and those whose brute-force p,
    Holm-adjusted over the four comparisons, is >= 0.05. The rows are built so that raw and adjusted p differ in
    which rows they mark."""
    n = 12
    best = np.ones(n)
    others = {"c1": np.r_[np.zeros(6), np.ones(6)], "c2": np.r_[np.zeros(9), np.ones(3)],
              "c3": np.r_[np.zeros(3), np.ones(9)], "c4": np.r_[np.zeros(5), np.ones(7)]}
    p = {k: _exact_p(best, v) for k, v in others.items()}
    adj = dict(zip(p, _holm(list(p.values()))))
    want = {k for k, v in adj.items() if v >= 0.05}
    assert {k for k, v in p.items() if v >= 0.05} != want  # Holm changes the answer here
    assert want and want != set(others)
    rows = _rows(format_table([_result("best", best)] + [_result(k, v) for k, v in others.items()]))
    got = {k for k in others if _bold(rows[f"{k} {k}_x/v0/last"]["t2v R@1"])}
    assert _bold(rows["best best_x/v0/last"]["t2v R@1"]) and got == want


def test_medr_lower_is_better_and_tested_on_ranks():
    rng = np.random.default_rng(2)
    ranks_a = rng.integers(1, 4, 400)
    ranks_b = ranks_a + rng.integers(2, 6, 400)  # every item ranked worse: a clear loss
    ranks_c = ranks_a.copy()
    ranks_c[:3] += 1  # nearly the same as a
    res = [_result(k, r == 1, ranks=r) for k, r in (("a", ranks_a), ("b", ranks_b), ("c", ranks_c))]
    rows = _rows(format_table(res))
    assert _bold(rows["a a_x/v0/last"]["t2v MedR"]) and _bold(rows["c c_x/v0/last"]["t2v MedR"])
    assert not _bold(rows["b b_x/v0/last"]["t2v MedR"])


def test_interval_in_every_format_equals_the_bootstrap():
    rng = np.random.default_rng(3)
    a, b = _outcomes(rng, 200, 0.4), _outcomes(rng, 200, 0.35)
    res = [_result("a", a), _result("b", b)]
    lo, hi = bootstrap_ci(100 * a, level=0.95, n_boot=10_000, seed=0)
    md = format_table(res)
    assert _rows(md)["a a_x/v0/last"]["t2v R@1"].strip("*") == f"{100 * a.mean():.1f} ±{(hi - lo) / 2:.1f}"
    assert "95 % percentile bootstrap" in md and "Holm" in md and "Items per test: 200" in md
    text = format_table(res, "csv")
    table = list(csv.DictReader(io.StringIO("".join(x + "\n" for x in text.splitlines() if not x.startswith("#")))))
    col = "synth/test/retrieval/t2v/R@1"
    assert float(table[0][f"{col}_lo"]) == pytest.approx(lo, abs=0.005)
    assert float(table[0][f"{col}_hi"]) == pytest.approx(hi, abs=0.005)
    assert table[0][col].rstrip("*") == f"{100 * a.mean():.1f}"
    tex = format_table(res, "latex")
    assert rf"{100 * a.mean():.1f}{{\scriptsize$\pm${(hi - lo) / 2:.1f}}}" in tex


def test_three_seeds_fold_into_one_row():
    rng = np.random.default_rng(4)
    runs = [_outcomes(rng, 300, p) for p in (0.40, 0.44, 0.38)]
    cost = {"trainable_params": 1_500_000, "total_params": 24_000_000, "optimizer_steps": 150,
            "samples_seen": 4800, "train_wall_s": 60.0}
    res = [_result("m", h, seed=k, experiment="m_synth", version=f"demo-seed{k}", cost=dict(cost, train_wall_s=60.0
                                                                                           + 6 * k))
           for k, h in enumerate(runs)]
    res.append(_result("other", _outcomes(rng, 300, 0.2), seed=0, experiment="o_synth", version="demo-seed0"))
    md = format_table(res)
    rows = _rows(md)
    assert set(rows) == {"m m_synth/demo-seed*/last", "other o_synth/demo-seed0/last"}
    row = rows["m m_synth/demo-seed*/last"]
    assert row["seeds"] == "3" and rows["other o_synth/demo-seed0/last"]["seeds"] == "1"
    lo, hi = hierarchical_bootstrap_ci(100 * np.stack(runs), n_boot=10_000, seed=0)
    mean = float(np.mean([100 * h.mean() for h in runs]))
    assert row["t2v R@1"].strip("*") == f"{mean:.1f} ±{(hi - lo) / 2:.1f}"
    single, _ = bootstrap_ci(100 * np.stack(runs).mean(0), n_boot=10_000, seed=0), None
    assert (hi - lo) > (single[1] - single[0])  # the seed-to-seed variation widens the interval
    assert row["params (trainable/total)"] == "1.5M/24.0M" and row["samples seen"] == "4.8k"
    assert row["steps"] == "150" and row["train min"] == "1.1"  # mean of 60, 66, 72 s
    assert "seeds: training runs folded into the row" in md and "hierarchical bootstrap" in md
    text = format_table(res, "csv")
    table = list(csv.DictReader(io.StringIO("".join(x + "\n" for x in text.splitlines() if not x.startswith("#")))))
    assert [(t["seeds"], t["total_params"], t["samples_seen"], t["train_wall_s"]) for t in table][0] == \
        ("3", "24000000", "4800", "66.0")
    # two runs of one experiment with the same seed (other overrides) are not folded together
    dup = res[:3] + [_result("m", runs[0], seed=0, experiment="m_synth", version="lr2-seed0")]
    rows = _rows(format_table(dup))
    assert rows["m m_synth/demo-seed*/last"]["seeds"] == "3" and rows["m m_synth/lr2-seed0/last"]["seeds"] == "1"


def test_different_items_are_not_paired_and_say_so():
    rng = np.random.default_rng(5)
    a = _outcomes(rng, 100, 0.5)
    b = _outcomes(rng, 100, 0.45)
    far = _outcomes(rng, 100, 0.1)
    res = [_result("a", a), _result("b", b, ids=[f"other{i}" for i in range(100)]),
           _result("far", far, ids=[f"x{i}" for i in range(100)])]
    md = format_table(res)
    rows = _rows(md)
    assert "Not paired (t2v R@1)" in md
    assert _bold(rows["b b_x/v0/last"]["t2v R@1"])  # intervals overlap
    assert not _bold(rows["far far_x/v0/last"]["t2v R@1"])


def test_compare_cli_on_results_files(tmp_path, capsys):
    rng = np.random.default_rng(6)
    a, b = _outcomes(rng, 1000, 0.5), _outcomes(rng, 1000, 0.3)
    for name, h in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps(_result(name, h)))
    assert main(["compare", str(tmp_path), "--n-boot", "2000", "--n-perm", "2000"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert _bold(rows["a a_x/v0/last"]["t2v R@1"]) and not _bold(rows["b b_x/v0/last"]["t2v R@1"])
    assert main(["compare", str(tmp_path), "--n-boot", "0"]) == 2


def test_one_row_explains_its_intervals_and_marks_nothing():
    md = format_table([_result("a", _outcomes(np.random.default_rng(7), 50, 0.5))])
    assert "± : half-width of the 95 % percentile bootstrap interval" in md
    assert "Bold" not in md and "**" not in md


# --------------------------------------------------------------------------------------- compare --paper
def _on(result: dict, dataset: str) -> dict:
    return dict(result, dataset=dataset)


def test_paper_rows_beside_reproductions_never_marked_with_binomial_intervals(tmp_path, capsys):
    """MILES reports 26.1 (zero-shot) and 37.7 (fine-tuned) t2v R@1 on MSR-VTT 1k-A: both rows appear, labelled,
    with ± = 1.96 sqrt(p (1 - p) / 1000) (computed here by hand), and neither is bold though both beat our row."""
    rng = np.random.default_rng(3)
    ours = _on(_result("miles", _outcomes(rng, 200, 0.2)), "msrvtt_1ka")
    other = _on(_result("frozen", _outcomes(rng, 200, 0.18)), "msrvtt_1ka")
    for r in (ours, other):
        (tmp_path / f"{r['method']}.json").write_text(json.dumps(r))
    assert main(["compare", str(tmp_path), "--paper", "--n-boot", "300", "--n-perm", "300"]) == 0
    out = capsys.readouterr()
    rows = _rows(out.out)
    for setting, p in (("zero-shot", 26.1), ("fine-tuned", 37.7)):
        cell = rows[f"miles paper: {setting}"]["t2v R@1"]
        half = 100 * 1.959964 * (p / 100 * (1 - p / 100) / 1000) ** 0.5
        assert cell == f"{p:.1f} ±{half:.1f}" and not _bold(cell)
    assert _bold(rows["miles miles_x/v0/last"]["t2v R@1"])  # the best among the measured rows
    assert "paper rows:" in out.out and "MILES paper, Table 1" in out.out
    assert "frozen: no reported numbers recorded for this method" in out.err
    assert main(["compare", str(tmp_path), "--n-boot", "300", "--n-perm", "300"]) == 0  # without --paper: none
    assert not any(k.startswith("miles paper") for k in _rows(capsys.readouterr().out))


def test_paper_rows_only_where_the_paper_reports_the_benchmark(tmp_path, capsys):
    rng = np.random.default_rng(4)
    (tmp_path / "r.json").write_text(json.dumps(_result("miles", _outcomes(rng, 50, 0.3))))  # synth
    assert main(["compare", str(tmp_path / "r.json"), "--paper", "--n-boot", "100", "--n-perm", "100"]) == 0
    out = capsys.readouterr()
    assert "paper" not in "".join(_rows(out.out))
    assert "its card's numbers are on didemo/test, lsmdc/test, msrvtt_1ka/test" in out.err
