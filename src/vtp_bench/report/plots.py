"""Plots of a comparison: the main metric per method and dataset (chance drawn), and the runs' training curves.

Horizontal bars, one panel per (dataset, split, task): method names sit on the y axis, so seven or more methods
never overlap. Training curves: one panel per run (its loss terms per step, and its validation task's main metric on
a second axis), read from the ``metrics.csv`` of the run dir that holds each result's checkpoint.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from vtp_bench.report.protocol import ReportError, group_key
from vtp_bench.report.table import checkpoint_label
from vtp_bench.report.tasks import report_of, task_order

Result = dict[str, Any]
# logged train/* quantities that are not loss terms (diagnostics on other scales): left off the curves
NOT_LOSSES = ("lr", "logit_scale", "ratio", "codes", "perplexity", "matched", "unweighted", "acc",
              "data_time", "data_share")  # train/data_*: the input pipeline's wait (data_time.py), not a loss


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def chance_of(result: Result) -> float | None:
    """The main metric's chance level, as the result's task computes it (``TaskReport.chance``)."""
    return report_of(result.get("task", "retrieval")).chance(result)


def _save(fig: Any, out: Path) -> Path:
    from vtp_bench.atomic import atomic_path

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:  # the temporary name ends in .tmp: say the format
        fig.savefig(tmp, dpi=110, format=out.suffix.lstrip(".").lower() or "png")
    _plt().close(fig)
    return out


def plot_results(results: list[Result], out: str | Path) -> Path:
    """FILE.png: per (dataset, split, task) a panel of horizontal bars, the task's main metric per (method,
    checkpoint) of the raw scores, its value printed at the bar's end, chance as a dashed line."""
    from vtp_bench.report.significance import Settings, interval
    from vtp_bench.report.table import build_table

    plt = _plt()
    if not results:
        raise ReportError("no results to plot")
    table = build_table(results)
    rows = [r for r in table.rows if r.rerank == "none"]
    keys = table.groups
    labels = [f"{r.method}\n{r.checkpoint}" + (f" ({r.seeds} seeds)" if r.seeds > 1 else "") for r in rows]
    n = len(keys)
    # at least 4 in (440 px) tall: one method's panel would otherwise be a flat strip under its titles
    size = (max(7.0, 2.0 + 3.6 * n), max(4.0, 1.6 + 0.55 * len(labels)))
    fig, axes = plt.subplots(1, n, figsize=size, sharey=True, squeeze=False)
    for ax, key in zip(axes[0], keys):
        metric = report_of(key[2]).main
        cells = [r.cells.get((key, metric)) for r in rows]
        vals = [c.value if c else None for c in cells]
        ivs = [interval(c, Settings(n_boot=2000)) if c else None for c in cells]
        ys = range(len(labels))
        err = [[v - iv[0] if iv else 0.0 for v, iv in zip(vals, ivs)],
               [iv[1] - v if iv else 0.0 for v, iv in zip(vals, ivs)]]
        err = [[max(0.0, e) if v is not None else 0.0 for e, v in zip(side, vals)] for side in err]
        ax.barh(ys, [v or 0.0 for v in vals], color="tab:blue", height=0.6, xerr=err, capsize=3,
                error_kw={"elinewidth": 1})
        chances = [c for c in (chance_of(r) for r in results if group_key(r) == key) if c is not None]
        top = max([iv[1] for iv in ivs if iv] + [v for v in vals if v is not None] + chances + [1.0])
        xmax = min(100.0, max(10.0, math.ceil(top * 1.25 / 10) * 10))
        # room for the value printed past a bar near 100 %: the axis runs on, its ticks stop at the scale's end
        ax.set_xlim(0, max(xmax, top + 0.14 * xmax))
        ax.set_xticks([t for t in ax.get_xticks() if 0 <= t <= xmax])
        for y, v, iv in zip(ys, vals, ivs):
            ax.text((iv[1] if iv else v or 0.0) + 0.01 * xmax, y, "n/a" if v is None else f"{v:.1f}", va="center",
                    fontsize=8, bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
        chance = ""
        if chances:
            c = sum(chances) / len(chances)
            ax.axvline(c, color="black", linestyle="--", linewidth=1)
            chance = f"\nchance (dashed) {c:.1f}"
        ax.set_xlabel(report_of(key[2]).main_label)
        ax.set_title(f"{report_of(key[2]).label}: {key[0]}/{key[1]}{chance}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(list(range(len(labels))), labels, fontsize=8)
    pad = max(0, 3 - len(labels)) / 2  # room of three bars at least: one or two keep a bar's width, centred
    axes[0][0].set_ylim(len(labels) - 0.5 + pad, -0.5 - pad)  # inverted: the first row on top
    datasets = ", ".join(sorted({k[0] for k in keys}))
    fig.suptitle(f"Main metric per method on {datasets}\n(raw scores, mean over seeds;\nwhiskers: 95 % bootstrap "
                 "interval; dashed line: chance level)", fontsize=11, wrap=True)
    fig.tight_layout()
    return _save(fig, Path(out))


def run_dir_of(result: Result) -> Path | None:
    """The run dir of a result's checkpoint (``RUN/checkpoints/x.ckpt``), looked up from the working directory and
    from the results file's folder upwards; None when there is none (released checkpoints)."""
    ckpt = Path(str(result.get("checkpoint") or ""))
    if ckpt.parent.name != "checkpoints":
        return None
    run = ckpt.parent.parent
    bases = [Path.cwd()] + (list(Path(result["file"]).resolve().parents) if result.get("file") else [])
    for base in bases:
        if (base / run / "metrics.csv").is_file():
            return base / run
    return None


def read_metrics_csv(path: Path) -> dict[str, dict[int, float]]:
    """Column -> {step: value} of a run's metrics.csv; the last row of a step wins (runlog: kept across resume)."""
    series: dict[str, dict[int, float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("step"):
                continue
            step = int(float(row["step"]))
            for k, v in row.items():
                if k in ("step", "epoch") or v in ("", None):
                    continue
                try:
                    series.setdefault(k, {})[step] = float(v)
                except ValueError:
                    continue
    return series


def val_metrics() -> list[tuple[str, str]]:
    """(logged key, label) of every registered task's main metric as validation logs it, in the tasks' order: a
    run's curve draws the first one it logged."""
    from vtp_bench.registry import TASKS

    reports = [report_of(t) for t in sorted(TASKS.names(), key=task_order)]
    return [(f"val/{r.main}", r.main_label) for r in reports]


def plot_curves(results: list[Result], out: str | Path) -> Path | None:
    """FILE_curves.png beside FILE.png: one panel per run, its logged loss terms (``train/*``, left axis) and its
    main validation metric (right axis, dots: the main metric of the task it validated on, ``eval.val_task``) over
    steps. None when no result's run dir has a metrics.csv."""
    from vtp_bench.report.table import build_table

    runs: dict[str, Path] = {}  # one panel per table row: a row of several seeds draws its first seed's run
    for row in build_table(results).rows if results else []:
        for r in sorted(row.results, key=lambda r: (r.get("seed") is None, r.get("seed"))):
            d = run_dir_of(r)
            if d is not None:
                seed = f", seed {r['seed']} of {row.seeds}" if row.seeds > 1 else ""
                runs.setdefault(f"{row.method} ({checkpoint_label(r)}{seed})", d)
                break
    if not runs:
        return None
    plt = _plt()
    n = len(runs)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(7.0, 4.2 * cols), 0.6 + 3.3 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (name, d) in zip(axes.flat, runs.items()):
        series = read_metrics_csv(d / "metrics.csv")
        losses = sorted((k for k in series if k.startswith("train/") and not any(w in k for w in NOT_LOSSES)),
                        key=lambda k: (k != "train/loss", k))  # the total first: the same colour in every panel
        for k in losses:
            steps = sorted(series[k])
            ax.plot(steps, [series[k][s] for s in steps], linewidth=1.8 if k == "train/loss" else 0.9,
                    label=k.removeprefix("train/"))
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(name.replace(" (", "\n(", 1), fontsize=9)  # method, then its run: never wider than the panel
        ax.grid(alpha=0.3)
        handles, labs = ax.get_legend_handles_labels()
        val_metric = next(((m, label) for m, label in val_metrics() if m in series), None)
        if val_metric is not None:
            ax2 = ax.twinx()
            steps = sorted(series[val_metric[0]])
            h = ax2.plot(steps, [series[val_metric[0]][s] for s in steps], "o-", color="black", markersize=3,
                         linewidth=1, label=f"validation {val_metric[1]}")
            ax2.set_ylabel("validation (%)")
            ax2.set_ylim(0, 100)
            handles, labs = handles + h, labs + [h[0].get_label()]
        if handles:
            ax.legend(handles, labs, fontsize=7, loc="best", framealpha=0.85)
    # wrap: the subtitle is wider than a figure of one or two panels; tight_layout makes room for its lines
    fig.suptitle("Training curves\nloss terms per step (left axis);\nvalidation (right axis, %): the main metric "
                 "of the task each run validates on", fontsize=11, wrap=True)
    fig.tight_layout()
    out = Path(out)
    return _save(fig, out.with_name(f"{out.stem}_curves{out.suffix or '.png'}"))
