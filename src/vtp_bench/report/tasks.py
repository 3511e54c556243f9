"""The registered evaluation tasks as the report reads them: each task declares its ``TaskReport`` (columns, which
direction is better, chance, protocol fields, footer words, plot axis) in its own file, so ``report/`` names none."""

from __future__ import annotations

from typing import Any

from vtp_bench.report.results import ReportError, task_of
from vtp_bench.tasks.base import TaskReport


def report_of(task: str) -> TaskReport:
    from vtp_bench.registry import TASKS, RegistryError

    try:
        return TASKS.get(task).report
    except RegistryError:
        raise ReportError(f"results of an unknown task {task!r} (known: {', '.join(TASKS.names())}); a task added "
                          "by a plugin is read with the same VTP_PLUGINS as the evaluation") from None


def reports_of(results: list[dict[str, Any]]) -> dict[str, TaskReport]:
    """The report of every task the results hold (an unknown one is a ReportError)."""
    return {t: report_of(t) for t in sorted({task_of(r) for r in results})}


def task_order(task: str) -> tuple[int, str]:
    return report_of(task).order, task
