"""Results JSON files -> one comparison table (markdown or CSV) and an optional bar plot."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterable

METRIC_COLUMNS = [
    "t2v/R@1", "t2v/R@5", "t2v/R@10", "t2v/MedR", "t2v/MeanR",
    "v2t/R@1", "v2t/R@5", "v2t/R@10", "v2t/MedR", "v2t/MeanR",
]
INFO_COLUMNS = ["method", "experiment", "dataset", "split", "num_queries", "num_videos", "frames"]


def is_result(d: Any) -> bool:
    return isinstance(d, dict) and "metrics" in d and "method" in d and "dataset" in d


def collect_results(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Result files, or directories searched recursively for ``*.json`` result files (run dirs work)."""
    results: list[dict[str, Any]] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist (give result JSON files or directories holding them)")
        files = sorted(p.rglob("*.json")) if p.is_dir() else [p]
        for f in files:
            try:
                d = json.loads(f.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                if p.is_dir():
                    continue
                raise ValueError(f"{f} is not a results JSON file") from None
            if is_result(d):
                d.setdefault("file", str(f))
                results.append(d)
            elif not p.is_dir():
                raise ValueError(f"{f} is not a vtp_bench results file (no method/dataset/metrics)")
    if not results:
        raise ValueError(f"no results JSON found in {[str(p) for p in paths]}")
    return sorted(results, key=lambda r: (r["dataset"], r["split"], r["method"], r.get("experiment", "")))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.1f}"
    return "" if v is None else str(v)


def table_rows(results: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = INFO_COLUMNS + METRIC_COLUMNS
    rows = [[_fmt(r.get(c)) for c in INFO_COLUMNS] + [_fmt(r["metrics"].get(m)) for m in METRIC_COLUMNS]
            for r in results]
    return header, rows


def format_table(results: list[dict[str, Any]], fmt: str = "markdown") -> str:
    header, rows = table_rows(results)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        return buf.getvalue()
    if fmt != "markdown":
        raise ValueError(f"--format must be markdown or csv, got {fmt!r}")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)]) + "\n"


def plot_results(results: list[dict[str, Any]], out: str | Path) -> Path:
    """Grouped bars of text-to-video R@1/5/10 per (method, dataset)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['method']}\n{r['dataset']}/{r['split']}" for r in results]
    ks = ["t2v/R@1", "t2v/R@5", "t2v/R@10"]
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(results) + 2), 3.5))
    width = 0.8 / len(ks)
    for j, k in enumerate(ks):
        xs = [i + (j - 1) * width for i in range(len(results))]
        ax.bar(xs, [r["metrics"][k] for r in results], width, label=k)
    for i, r in enumerate(results):  # chance level of R@1 on that test set
        if r.get("num_videos"):
            ax.hlines(100.0 / r["num_videos"], i - 0.45, i + 0.45, colors="black", linestyles="dashed",
                      label="chance R@1" if i == 0 else None)
    ax.set_xticks(range(len(results)), labels)
    ax.set_ylabel("recall (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
