"""Results JSON files -> one comparison table (markdown or CSV) and an optional bar plot."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterable

METRIC_COLUMNS = {  # per evaluation task (results without a "task" are retrieval results)
    "retrieval": ["t2v/R@1", "t2v/R@5", "t2v/R@10", "t2v/MedR", "t2v/MeanR",
                  "v2t/R@1", "v2t/R@5", "v2t/R@10", "v2t/MedR", "v2t/MeanR"],
    "zeroshot_cls": ["top1", "top5", "mean_class_acc"],
    "grounding": ["R@1,IoU=0.3", "R@1,IoU=0.5", "R@1,IoU=0.7", "R@5,IoU=0.5", "R@5,IoU=0.7", "mIoU"],
}
INFO_COLUMNS = {
    "retrieval": ["method", "experiment", "dataset", "split", "num_queries", "num_videos", "frames"],
    "zeroshot_cls": ["method", "experiment", "dataset", "split", "num_videos", "num_classes", "frames",
                     "chance_top1"],
    "grounding": ["method", "experiment", "dataset", "split", "num_queries", "num_videos", "frames",
                  "chance/R@1,IoU=0.5"],  # a/b: key b of the result's dict a
}


def task_of(result: dict[str, Any]) -> str:
    return result.get("task", "retrieval")


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


def _info(result: dict[str, Any], column: str) -> Any:
    if "/" in column:
        outer, inner = column.split("/", 1)
        return (result.get(outer) or {}).get(inner)
    return result.get(column)


def table_rows(results: list[dict[str, Any]], task: str = "retrieval") -> tuple[list[str], list[list[str]]]:
    info, metrics = INFO_COLUMNS[task], METRIC_COLUMNS[task]
    rows = [[_fmt(_info(r, c)) for c in info] + [_fmt(r["metrics"].get(m)) for m in metrics] for r in results]
    return info + metrics, rows


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)]) + "\n"


def format_table(results: list[dict[str, Any]], fmt: str = "markdown") -> str:
    """One table per evaluation task (its own metric columns), in the order retrieval, zero-shot, grounding."""
    if fmt not in ("markdown", "csv"):
        raise ValueError(f"--format must be markdown or csv, got {fmt!r}")
    tasks = [t for t in METRIC_COLUMNS if any(task_of(r) == t for r in results)]
    unknown = sorted({task_of(r) for r in results} - set(METRIC_COLUMNS))
    if unknown:
        raise ValueError(f"results of an unknown task {unknown[0]!r} (known: {', '.join(METRIC_COLUMNS)})")
    blocks = []
    for task in tasks:
        header, rows = table_rows([r for r in results if task_of(r) == task], task)
        if fmt == "csv":
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows([header, *rows])
            blocks.append(buf.getvalue())
        else:
            title = f"**{task}**\n\n" if len(tasks) > 1 else ""
            blocks.append(title + _markdown(header, rows))
    return "\n".join(blocks)


def plot_results(results: list[dict[str, Any]], out: str | Path) -> Path:
    """Grouped bars of text-to-video R@1/5/10 per (method, dataset), for the retrieval results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in results if task_of(r) == "retrieval"]
    if not results:
        raise ValueError("no retrieval results to plot")
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
    datasets = sorted({f"{r['dataset']}/{r['split']}" for r in results})
    ax.set_title(f"Text-to-video recall at 1, 5, 10 on {', '.join(datasets)} (dashed: chance R@1)", fontsize=10)
    ax.set_ylim(0, 100)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
