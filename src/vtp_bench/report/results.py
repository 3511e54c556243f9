"""Finding and reading results JSON files (written by ``vtp-bench eval``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable


class ReportError(ValueError):
    """Results that cannot be put in one table (none found, not a results file, duplicates, unknown task, bad
    format name): the message names the file and what to do."""


def task_of(result: dict[str, Any]) -> str:
    return result.get("task", "retrieval")


def is_result(d: Any) -> bool:
    return isinstance(d, dict) and "metrics" in d and "method" in d and "dataset" in d


def collect_results(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Result files, or directories searched recursively for ``*.json`` result files (run dirs work)."""
    results: list[dict[str, Any]] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ReportError(f"{p} does not exist (give result JSON files or directories holding them)")
        files = sorted(p.rglob("*.json")) if p.is_dir() else [p]
        for f in files:
            try:
                d = json.loads(f.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                if p.is_dir():
                    continue
                raise ReportError(f"{f} is not a results JSON file (not JSON)") from None
            if is_result(d):
                if not d.get("split"):
                    raise ReportError(f"{f}: a results file without 'split' (which part of {d['dataset']} was "
                                      "scored); add it, or re-run vtp-bench eval")
                d.setdefault("file", str(f))
                results.append(d)
            elif not p.is_dir():
                raise ReportError(f"{f} is not a vtp_bench results file (no method/dataset/metrics): give the JSON "
                                  "files that vtp-bench eval --out writes")
    if not results:
        raise ReportError(f"no results JSON found in {', '.join(str(p) for p in paths)}: give the files written by "
                          "vtp-bench eval --out, or folders holding them (e.g. results/)")
    return sorted(results, key=lambda r: (r["dataset"], r["split"], r["method"], r.get("experiment", "")))
