"""The comparison table: a row per (method, checkpoint[, re-ranking]), a column group per (dataset, split, task).

Results that differ only in the training seed (same method, experiment, re-ranking and protocol) fold into one row
with a ``seeds`` column: the cell is the mean over seeds. A cell of a result with per-item outcomes (``per_query``)
shows its 95 % interval (``report.significance``) and is marked when it is not significantly worse than its
column's best: a paired permutation test on the items both rows scored, Holm-corrected over the rows compared
with the best. Results without per-item outcomes (older files) are marked only when equal to the best value as
displayed. Nothing is marked in a column with fewer than two values. Re-ranked rows are labelled extras and never
marked. Markdown and LaTeX mark in bold; CSV appends ``*`` to the value and gives the interval as ``<col>_lo`` /
``<col>_hi``. What each row cost (parameters, samples seen, steps, training time) follows the metrics. A protocol
footer follows every table (``#`` comment lines in CSV, ``%`` comment lines in LaTeX).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any, Sequence

from vtp_bench.report.paper import is_reference
from vtp_bench.report.protocol import ReportError, check_protocols, footer_lines, group_key, variant_titles
from vtp_bench.report.rows import Row, build_rows, checkpoint_label
from vtp_bench.report.significance import Marks, Settings, interval, mark_column
from vtp_bench.report.tasks import report_of, reports_of, task_order
from vtp_bench.tasks.base import Column

__all__ = ["FORMATS", "Row", "Table", "build_table", "checkpoint_label", "format_table"]

Result = dict[str, Any]
FORMATS = ("markdown", "csv", "latex")
# (cost key in a results JSON, column label, CSV column)
COST_COLUMNS = [("params", "params (trainable/total)", None), ("samples_seen", "samples seen", "samples_seen"),
                ("optimizer_steps", "steps", "optimizer_steps"), ("train_wall_s", "train min", "train_wall_s")]


@dataclass
class Table:
    groups: list[tuple[str, str, str]]  # (dataset, split, task)
    rows: list[Row]
    results: list[Result]
    title: str = ""
    per_row: tuple[str, ...] = ()
    settings: Settings = field(default_factory=Settings)
    _marks: Marks | None = None

    @property
    def measured(self) -> list[Result]:
        """The results of this table's own protocol (not the papers' reference rows)."""
        return [r for r in self.results if not is_reference(r)]

    @property
    def reranked(self) -> bool:
        return any(r.rerank != "none" for r in self.rows)

    @property
    def seeded(self) -> bool:
        """Whether the results record training seeds (then the table has a ``seeds`` column)."""
        return any(r.get("seed") is not None for r in self.results)

    @property
    def costed(self) -> bool:
        return any(r.cost() for r in self.rows)

    def columns(self) -> list[tuple[tuple[str, str, str], str, str]]:
        """(group, metric key, label) in order; a label is prefixed by its dataset/split when two groups of the
        same task share the table."""
        out = []
        for g in self.groups:
            shared = sum(1 for h in self.groups if h[2] == g[2]) > 1
            out += [(g, c.key, f"{g[0]}/{g[1]} {c.label}" if shared else c.label) for c in report_of(g[2]).columns]
        return out

    def column(self, group: tuple[str, str, str], key: str) -> Column:
        return report_of(group[2]).column(key)

    def marks(self) -> Marks:
        """Intervals of every cell (set on the cells) and the marked cells (report.significance), computed once."""
        if self._marks is None:
            for r in self.rows:
                for (g, key), cell in r.cells.items():
                    proportion = self.column(g, key).proportion
                    n = r.members[g][0].get("num_queries") if r.reference and proportion else None
                    cell.interval = interval(cell, self.settings, n)
            self._marks = Marks()
            for j, (g, key, label) in enumerate(self.columns()):
                mark_column(self.rows, (g, key), j, label, self.column(g, key).lower_is_better, self.settings,
                            self._marks)
        return self._marks

    def best(self) -> set[tuple[int, int]]:
        """(row index, column index) of every marked cell (see module doc)."""
        return self.marks().cells


def build_table(results: list[Result], title: str = "", per_row: Sequence[str] = (),
                settings: Settings | None = None) -> Table:
    columns = {task: report.columns for task, report in reports_of(results).items()}
    groups = sorted({(r["dataset"], r["split"], r.get("task", "retrieval")) for r in results},
                    key=lambda g: (task_order(g[2]), g[0], g[1]))
    rows = build_rows(results, columns, tuple(per_row))
    return Table(groups, rows, results, title, tuple(per_row), settings or Settings())


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.1f}"


def _count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:.0f}"


def _cost_cells(row: Row) -> list[str]:
    c = row.cost()
    params = (f"{_count(c['trainable_params'])}/{_count(c['total_params'])}"
              if "trainable_params" in c and "total_params" in c else "")
    wall = c.get("train_wall_s")
    return [params, _count(c["samples_seen"]) if "samples_seen" in c else "",
            f"{c['optimizer_steps']:.0f}" if "optimizer_steps" in c else "",
            f"{wall / 60:.1f}" if wall is not None else ""]


def _lead(table: Table, r: Row) -> list[str]:
    return ([r.method, r.checkpoint] + ([r.rerank] if table.reranked else []) + ([str(r.seeds)] if table.seeded
            else []) + ["/".join(map(str, r.per_row[f])) for f in table.per_row])


def _cells(table: Table, plus_minus: str = " ±") -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """Header, body and marks; a cell with an interval reads ``value<plus_minus>half-width``."""
    cols = table.columns()
    lead_head = (["method", "checkpoint"] + (["rerank"] if table.reranked else []) + (["seeds"] if table.seeded
                 else []) + list(table.per_row))
    cost_head = [label for _, label, _ in COST_COLUMNS] if table.costed else []
    head = lead_head + [c[2] for c in cols] + cost_head
    best = table.best()
    body, flags = [], []
    for i, r in enumerate(table.rows):
        lead = _lead(table, r)
        cells = []
        for g, k, _ in cols:
            cell = r.cells.get((g, k))
            text = _fmt(cell.value if cell else None)
            if cell is not None and cell.interval is not None:
                text += f"{plus_minus}{(cell.interval[1] - cell.interval[0]) / 2:.1f}"
            cells.append(text)
        cost = _cost_cells(r) if table.costed else []
        body.append(lead + cells + cost)
        flags.append([False] * len(lead) + [(i, j) in best for j in range(len(cols))] + [False] * len(cost))
    return head, body, flags


def _legend(table: Table) -> list[str]:
    """What the columns, the ± and the marks mean, and how many items each test had."""
    parts = [f"{report_of(t).label} on {d}/{s} ({', '.join(c.label for c in report_of(t).columns)})"
             for d, s, t in table.groups]
    others = {c.label.split(" ")[-1]: c for _, _, t in table.groups for c in report_of(t).columns if c.unit != "%"}
    lines = ["Columns: " + "; ".join(parts) + ". Percent" + "".join(
        f", except {name} ({c.unit}{', lower is better' if c.lower_is_better else ''})" for name, c in others.items())
        + "."]
    medians = sorted({(c.label.split(" ")[-1], c.items_key.split("/")[-1]) for _, _, t in table.groups
                      for c in report_of(t).columns if c.statistic != "mean"})
    marks = table.marks()
    n_boot, n_perm = table.settings.n_boot, table.settings.n_perm
    if any(c.interval is not None for r in table.rows for c in r.cells.values()):
        lines.append(f"± : half-width of the 95 % percentile bootstrap interval over the test items ({n_boot:,} "
                     "resamples" + ("; a row of several seeds: hierarchical bootstrap, seeds and items resampled"
                                   if any(r.seeds > 1 for r in table.rows) else "") + ").")
    if marks.items:
        lines.append("Bold: every row not significantly worse than the column's best: two-sided paired permutation "
                     f"test ({n_perm:,} random sign flips, exact below 2^n) of the per-item outcomes"
                     + (" averaged over each row's seeds" if any(r.seeds > 1 for r in table.rows) else "")
                     + ", on the items both rows scored, p >= 0.05 after Holm's correction over the rows compared "
                     "with the best" + "".join(f"; {m} columns are tested on the per-item {w}s" for m, w in medians)
                     + ".")
        counts: dict[str, list[str]] = {}
        for label, n in marks.items.items():
            counts.setdefault(str(n), []).append(label)
        lines.append("Items per test: " + "; ".join(f"{n} ({', '.join(labels)})" for n, labels in counts.items())
                     + ".")
    elif marks.cells:
        lines.append("Bold: the best raw value per column (these results carry no per-item outcomes, so no "
                     "interval or test).")
    if marks.unpaired:
        lines.append(f"Not paired ({', '.join(sorted(marks.unpaired))}): some rows were scored on other items than "
                     "the best; they are marked when their interval reaches the best's.")
    if marks.unmarked_without_items and marks.items:
        lines.append(f"Without per-item outcomes ({', '.join(sorted(marks.unmarked_without_items))}): such rows are "
                     "marked only when equal to the best as displayed.")
    refs = sorted({(r.method, r.reference) for r in table.rows if r.reference})
    if refs:
        lines.append("paper rows: the numbers each method's paper reports (" + "; ".join(f"{m}: {s}" for m, s in refs)
                     + "), on the paper's own data, frames and training, not this table's protocol: never marked; "
                     "their ± is the binomial half-width of a recall at the benchmark's test size (no interval is "
                     "reported).")
    if table.seeded:
        lines.append("seeds: training runs folded into the row (same method, experiment and protocol); a cell is "
                     "the mean over them.")
    if table.costed:
        lines.append("Cost: parameters trainable/total; samples seen = optimizer steps x batch x ranks "
                     "(x accumulation); steps; train min = wall time of training, per run (mean over seeds).")
    return lines


def to_markdown(table: Table) -> str:
    head, body, flags = _cells(table)
    body = [[f"**{c}**" if f else c for c, f in zip(row, fl)] for row, fl in zip(body, flags)]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    n_lead = len(head) - len(table.columns()) - (len(COST_COLUMNS) if table.costed else 0)
    sep = "|" + "|".join("-" * (w + 2) if i < n_lead else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    title = f"**{table.title}**\n\n" if table.title else ""
    foot = "\n".join(footer_lines(table.measured, table.per_row))
    legend = "\n".join(_legend(table))
    return f"{title}{line(head)}\n{sep}\n" + "\n".join(line(r) for r in body) + f"\n\n{legend}\n\n{foot}\n"


def to_csv(table: Table) -> str:
    """One column per metric with its ``_lo`` / ``_hi`` interval columns; ``rerank``, ``seeds`` and the cost columns
    are always there (a stable schema)."""
    table.marks()
    cols = table.columns()
    best = table.best()
    head = ["method", "checkpoint", "rerank", "seeds", *table.per_row]
    for g, k, _ in cols:
        name = f"{g[0]}/{g[1]}/{g[2]}/{k}"
        head += [name, f"{name}_lo", f"{name}_hi"]
    head += ["trainable_params", "total_params", "samples_seen", "optimizer_steps", "train_wall_s"]
    body = []
    for i, r in enumerate(table.rows):
        out = [r.method, r.checkpoint, r.rerank, str(r.seeds)] + ["/".join(map(str, r.per_row[f]))
                                                                  for f in table.per_row]
        for j, (g, k, _) in enumerate(cols):
            cell = r.cells.get((g, k))
            value = _fmt(cell.value if cell else None) + ("*" if (i, j) in best else "")
            lo, hi = cell.interval if cell is not None and cell.interval is not None else (None, None)
            out += [value, "" if lo is None else f"{lo:.2f}", "" if hi is None else f"{hi:.2f}"]
        c = r.cost()
        out += ["" if c.get(k) is None else f"{c[k]:.0f}" for k in ("trainable_params", "total_params",
                                                                    "samples_seen", "optimizer_steps")]
        out.append("" if c.get("train_wall_s") is None else f"{c['train_wall_s']:.1f}")
        body.append(out)
    buf = io.StringIO()
    if table.title:
        buf.write(f"# {table.title}\n")
    csv.writer(buf, lineterminator="\n").writerows([head, *body])
    lines = [line.replace("Bold: ", "Marked with a trailing *: ") for line in _legend(table)]
    lines += footer_lines(table.measured, table.per_row)
    buf.write("".join(f"# {line}\n" for line in lines))
    return buf.getvalue()


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


_PM = "\x00"  # stands for the ± until the cell is escaped


def to_latex(table: Table) -> str:
    head, body, flags = _cells(table, plus_minus=_PM)
    cols = table.columns()
    n_cost = len(COST_COLUMNS) if table.costed else 0
    n_lead = len(head) - len(cols) - n_cost
    out = [f"% {latex_escape(table.title)}"] if table.title else []
    out += [r"\begin{tabular}{" + "l" * n_lead + "r" * (len(cols) + n_cost) + "}", r"\toprule"]
    spans, rules, start = [], [], n_lead + 1
    for g in table.groups:
        n = len(report_of(g[2]).columns)
        spans.append(rf"\multicolumn{{{n}}}{{c}}{{{latex_escape(f'{g[0]}/{g[1]} {report_of(g[2]).label}')}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + n - 1}}}")
        start += n
    out.append(" & " * n_lead + " & ".join(spans) + r" \\")
    out.append(" ".join(rules))
    out.append(" & ".join(latex_escape(h) for h in head) + r" \\")
    out.append(r"\midrule")
    for row, fl in zip(body, flags):
        cells = [latex_escape(c).replace(_PM, r"{\scriptsize$\pm$") + ("}" if _PM in c else "") for c in row]
        out.append(" & ".join(rf"\textbf{{{c}}}" if f else c for c, f in zip(cells, fl)) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    out += [f"% {latex_escape(line)}" for line in [*_legend(table), *footer_lines(table.measured, table.per_row)]]
    return "\n".join(out) + "\n"


RENDER = {"markdown": to_markdown, "csv": to_csv, "latex": to_latex}


def tables_of(results: list[Result], split_protocols: bool = False, per_row: Sequence[str] = (),
              settings: Settings | None = None) -> list[Table]:
    """Protocol-consistent tables (refused, or split with ``split_protocols``; see report.protocol)."""
    refs = [r for r in results if is_reference(r)]  # paper rows: the paper's protocol, joined to every table
    sets = check_protocols([r for r in results if not is_reference(r)], split=split_protocols, per_row=per_row)
    titles = variant_titles(sets, per_row) if len(sets) > 1 else [""]
    sets = [s + [r for r in refs if group_key(r) in {group_key(x) for x in s}] for s in sets]
    return [build_table(rs, f"Table {i + 1} of {len(sets)}: {t}" if len(sets) > 1 else "", per_row, settings)
            for i, (rs, t) in enumerate(zip(sets, titles))]


def format_table(results: list[Result], fmt: str = "markdown", split_protocols: bool = False,
                 per_row: Sequence[str] = (), settings: Settings | None = None) -> str:
    """The comparison table(s) in markdown, CSV or LaTeX (booktabs), each followed by its protocol footer.
    ``per_row``: protocol fields allowed to differ between rows, shown as columns (report.protocol).
    ``settings``: bootstrap resamples, permutations and their random seed (``report.significance``)."""
    if fmt not in RENDER:
        raise ReportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return "\n".join(RENDER[fmt](t) for t in tables_of(results, split_protocols, per_row, settings))
