"""What each task declares for the report (``TaskReport``) is what the tables do: the columns' statistics and
directions, the legend, paper rows' intervals, and the protocol fields that keep results of one task apart; and the
evaluation sets drop unreadable videos with their queries, whatever the set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vtp_bench.registry import TASKS
from vtp_bench.report import ProtocolMismatchError, check_protocols, format_table
from vtp_bench.report.table import build_table

# the fields each package task must keep apart (a result scored otherwise is another protocol)
PROTOCOL_FIELDS = {
    "retrieval": {"num_queries", "protocol", "v2t", "excluded"},
    "zeroshot_cls": {"num_classes", "prompt_template"},
    "grounding": {"num_queries", "clip_seconds", "max_moment_clips", "moment_score"},
    "multiple_choice": {"num_questions", "num_candidates"},
}


def _retrieval(method: str, ranks: list[int]) -> dict:
    ranks_f = [float(r) for r in ranks]
    ids = [f"q{i}" for i in range(len(ranks))]
    hits = [100.0 * (r == 1) for r in ranks]
    return {"method": method, "experiment": f"{method}_x", "checkpoint": f"runs/{method}_x/v0/checkpoints/last.ckpt",
            "dataset": "synth", "split": "test", "task": "retrieval", "num_queries": len(ranks),
            "num_videos": len(ranks), "frames": 4, "sampler": "uniform", "decoder": "pyav", "img_size": 64,
            "manifest_sha256": "ab" * 32, "protocol": {"name": "vtp_bench", "v2t": "caption", "excluded": []},
            "metrics": {"t2v/R@1": float(np.mean(hits)), "t2v/MedR": float(np.median(ranks_f))},
            "per_query": {"t2v/R@1": hits, "t2v/rank": ranks_f, "t2v/ids": ids}}


def test_medr_is_the_median_of_the_ranks_lower_is_better_and_not_a_proportion():
    ranks = [1, 1, 2, 9, 30, 40, 50]  # median 9, mean 19: the statistic decides the interval's centre
    table = build_table([_retrieval("a", ranks)])
    group = table.groups[0]
    cell = table.rows[0].cells[(group, "t2v/MedR")]
    assert cell.statistic == "median" and list(cell.items[0]) == [float(r) for r in ranks]
    assert table.column(group, "t2v/MedR").lower_is_better
    text = format_table([_retrieval("a", ranks), _retrieval("b", [r + 1 for r in ranks])])
    assert "Percent, except MedR (rank, lower is better)" in text
    assert "MedR columns are tested on the per-item ranks" in text
    paper = dict(_retrieval("paper", ranks), reference="the paper", per_query=None, checkpoint="paper: x")
    table = build_table([_retrieval("a", ranks), paper])
    table.marks()
    ref = next(r for r in table.rows if r.reference)
    assert ref.cells[(group, "t2v/R@1")].interval is not None  # a recall: its binomial half-width
    assert ref.cells[(group, "t2v/MedR")].interval is None  # a rank is no proportion: no binomial interval


@pytest.mark.parametrize("task", sorted(PROTOCOL_FIELDS))
def test_results_that_differ_in_a_field_their_task_declares_are_not_merged(task):
    report = TASKS.get(task).report
    assert PROTOCOL_FIELDS[task] <= set(report.protocol)
    for field in sorted(PROTOCOL_FIELDS[task]):
        base = {"method": "a", "dataset": "d", "split": "test", "task": task, "metrics": {}, "protocol": {}}
        one, two = _set(base, field, 1), _set(dict(base, method="b"), field, 2)  # differ in this field only
        with pytest.raises(ProtocolMismatchError, match=field):
            check_protocols([one, two])


def _set(result: dict, field: str, value: int) -> dict:
    """``result`` with ``field`` read as ``value`` by its task's protocol reader."""
    if field in ("protocol", "v2t"):
        key = "name" if field == "protocol" else "v2t"
        return {**result, "protocol": {**result.get("protocol", {}), key: f"x{value}"}}
    if field == "excluded":
        return {**result, "protocol": {**result.get("protocol", {}), "excluded": ["v"] * value}}
    return {**result, field: value}


def test_every_set_drops_a_video_with_its_queries_and_remaps_the_rest(tmp_path):
    """``DropsVideos`` on the list-based sets (grounding, multiple choice) as on retrieval's tensor."""
    from vtp_bench.tasks.grounding import GroundingSet
    from vtp_bench.tasks.multiple_choice import MultipleChoiceSet

    paths = [Path(f"{v}.mp4") for v in "abc"]
    g = GroundingSet(Path("m"), ["a", "b", "c"], paths, [3.0, 4.0, 5.0], 1.0, ["qa", "qb1", "qc", "qb2"],
                     ["ta", "tb1", "tc", "tb2"], [0, 1, 2, 1], [(0, 1), (1, 2), (2, 3), (0, 2)])
    d = g.drop_videos([1])
    assert d.video_ids == ["a", "c"] and d.durations == [3.0, 5.0] and d.missing == ["b"]
    assert d.texts == ["qa", "qc"] and d.query_video == [0, 1] and d.gt == [(0, 1), (2, 3)]
    assert [c.video for c in d.clips] == [0] * 3 + [1] * 5
    m = MultipleChoiceSet(Path("m"), ["a", "b", "c"], paths, [(None, None)] * 3, ["a1", "a2", "b1", "b2", "c1", "c2"],
                          [f"t{i}" for i in range(6)], [0, 0, 1, 1, 2, 2], [True, False, False, True, True, False])
    d = m.drop_videos([0])
    assert d.video_ids == ["b", "c"] and d.candidates == ["b1", "b2", "c1", "c2"]
    assert d.candidate_video == [0, 0, 1, 1] and d.is_answer == [False, True, True, False] and d.missing == ["a"]
