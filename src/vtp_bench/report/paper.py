"""The numbers the methods' papers report, as reference rows beside reproductions (``vtp-bench compare --paper``).

Each method declares them in its own file (``Method.reported``, from its card in ``docs/methods/``). A reference
row is built for every reported number on a (dataset, split, task) the compared results cover; it is never marked
best (it was measured on the paper's protocol and data, not this table's) and its ± is the binomial half-width of
each recall at the benchmark's test size (the papers give no interval).
"""

from __future__ import annotations

from typing import Any

from vtp_bench.report.protocol import group_key

Result = dict[str, Any]


def paper_results(results: list[Result]) -> tuple[list[Result], list[str]]:
    """Reference results (``"reference"``: the source) for the methods and groups of ``results``, and one note per
    method whose paper reports nothing on them (naming what it does report)."""
    from vtp_bench.registry import METHODS

    groups = {group_key(r) for r in results}
    refs: list[Result] = []
    notes: list[str] = []
    for name in sorted({r["method"] for r in results}):
        reported = METHODS.get(name).reported if name in METHODS else ()
        mine = [p for p in reported if (p.dataset, p.split, p.task) in groups]
        refs += [{"method": name, "checkpoint": f"paper: {p.setting}", "experiment": None, "dataset": p.dataset,
                  "split": p.split, "task": p.task, "metrics": dict(p.metrics), "reference": p.source,
                  "num_queries": p.num_queries, "file": f"docs/methods/{name}.md"} for p in mine]
        if not mine:
            where = sorted({f"{p.dataset}/{p.split}" for p in reported})
            shown = ", ".join(sorted(f"{d}/{s}" for d, s, _ in groups))
            notes.append(f"{name}: no reported numbers on {shown} recorded (its card's numbers are on "
                         f"{', '.join(where)})" if where else f"{name}: no reported numbers recorded for this method "
                         "(Method.reported is empty)")
    return refs, notes


def is_reference(result: Result) -> bool:
    return bool(result.get("reference"))
