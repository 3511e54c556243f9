"""The comparison table: a row per (method, checkpoint[, re-ranking]), a column group per (dataset, split, task).

Best per column: the highest value (lowest for MedR) among the raw-score rows, as displayed (one decimal), ties all
marked; nothing is marked in a column with fewer than two values. Re-ranked rows are labelled extras and never
marked. Markdown and LaTeX mark in bold; CSV appends ``*`` to the value. A protocol footer follows every table
(``#`` comment lines in CSV, ``%`` comment lines in LaTeX).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from vtp_bench.report.protocol import (ReportError, check_protocols, footer_lines, group_key, protocol_of,
                                       variant_titles)
from vtp_bench.report.results import task_of

Result = dict[str, Any]
FORMATS = ("markdown", "csv", "latex")
TASK_ORDER = ("retrieval", "grounding", "zeroshot_cls")
TASK_LABELS = {"retrieval": "retrieval", "grounding": "grounding", "zeroshot_cls": "zero-shot"}
# (key in the results' metrics, column label) per task
COLUMNS: dict[str, list[tuple[str, str]]] = {
    "retrieval": [(f"{d}/{k}", f"{d} {k}") for d in ("t2v", "v2t") for k in ("R@1", "R@5", "R@10", "MedR")],
    "grounding": [("R@1,IoU=0.5", "R@1 IoU0.5"), ("R@1,IoU=0.7", "R@1 IoU0.7"), ("mIoU", "mIoU")],
    "zeroshot_cls": [("top1", "top-1")],
}
LOWER_IS_BETTER = {"t2v/MedR", "v2t/MedR"}
MAIN_METRIC = {"retrieval": "t2v/R@1", "grounding": "R@1,IoU=0.5", "zeroshot_cls": "top1"}


def checkpoint_label(result: Result) -> str:
    """``runs/EXP/VERSION/checkpoints/last.ckpt`` -> ``EXP/VERSION/last``; any other file: its name."""
    p = Path(str(result.get("checkpoint") or result.get("experiment") or "?"))
    if p.parent.name == "checkpoints" and len(p.parts) >= 4:
        return f"{p.parts[-4]}/{p.parts[-3]}/{p.stem}"
    return p.name


@dataclass
class Row:
    method: str
    checkpoint: str
    rerank: str = "none"
    cells: dict[tuple[tuple[str, str, str], str], float] = field(default_factory=dict)
    per_row: dict[str, list[Any]] = field(default_factory=dict)  # protocol fields shown per row (values seen)
    files: dict[tuple[str, str, str], str] = field(default_factory=dict)


@dataclass
class Table:
    groups: list[tuple[str, str, str]]  # (dataset, split, task)
    rows: list[Row]
    results: list[Result]
    title: str = ""
    per_row: tuple[str, ...] = ()

    @property
    def reranked(self) -> bool:
        return any(r.rerank != "none" for r in self.rows)

    def columns(self) -> list[tuple[tuple[str, str, str], str, str]]:
        """(group, metric key, label) in order; a label is prefixed by its dataset/split when two groups of the
        same task share the table."""
        out = []
        for g in self.groups:
            shared = sum(1 for h in self.groups if h[2] == g[2]) > 1
            out += [(g, key, f"{g[0]}/{g[1]} {label}" if shared else label) for key, label in COLUMNS[g[2]]]
        return out

    def best(self) -> set[tuple[int, int]]:
        """(row index, column index) of the best value per column (see module doc)."""
        marked = set()
        for j, (g, key, _) in enumerate(self.columns()):
            vals = [(i, round(r.cells[(g, key)], 1)) for i, r in enumerate(self.rows)
                    if r.rerank == "none" and (g, key) in r.cells]
            if len(vals) < 2:
                continue
            pick = min if key in LOWER_IS_BETTER else max
            target = pick(v for _, v in vals)
            marked |= {(i, j) for i, v in vals if v == target}
        return marked


def build_table(results: list[Result], title: str = "", per_row: Sequence[str] = ()) -> Table:
    unknown = sorted({task_of(r) for r in results} - set(COLUMNS))
    if unknown:
        raise ReportError(f"results of an unknown task {unknown[0]!r} (known: {', '.join(COLUMNS)})")
    groups = sorted({group_key(r) for r in results}, key=lambda g: (TASK_ORDER.index(g[2]), g[0], g[1]))
    rows: dict[tuple[str, str, str], Row] = {}
    for r in results:
        entries = [("none", r.get("metrics") or {})]
        if r.get("metrics_reranked"):
            entries.append((((r.get("protocol") or {}).get("rerank") or {}).get("name", "reranked"),
                            r["metrics_reranked"]))
        g = group_key(r)
        for rerank, metrics in entries:
            key = (r["method"], checkpoint_label(r), rerank)
            row = rows.setdefault(key, Row(*key))
            cells = {(g, k): float(metrics[k]) for k, _ in COLUMNS[g[2]] if metrics.get(k) is not None}
            if g in row.files:
                if all(row.cells.get(c) == v for c, v in cells.items()):
                    continue  # the same raw scores twice (one checkpoint evaluated with two re-rankings)
                raise ReportError(f"two results for {key[0]} {key[1]} on {g[0]}/{g[1]} {g[2]}: {row.files[g]} and "
                                  f"{r.get('file', '?')} (keep one)")
            row.files[g] = r.get("file", "?")
            proto = protocol_of(r)
            for f in per_row:
                if proto.get(f) not in row.per_row.setdefault(f, []):
                    row.per_row[f].append(proto.get(f))
            row.cells.update(cells)
    return Table(groups, list(rows.values()), results, title, tuple(per_row))


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.1f}"


def _cells(table: Table) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    cols = table.columns()
    lead_head = ["method", "checkpoint"] + (["rerank"] if table.reranked else []) + list(table.per_row)
    head = lead_head + [c[2] for c in cols]
    best = table.best()
    body, flags = [], []
    for i, r in enumerate(table.rows):
        lead = [r.method, r.checkpoint] + ([r.rerank] if table.reranked else []) + [
            "/".join(map(str, r.per_row[f])) for f in table.per_row]
        body.append(lead + [_fmt(r.cells.get((g, k))) for g, k, _ in cols])
        flags.append([False] * len(lead) + [(i, j) in best for j in range(len(cols))])
    return head, body, flags


def _legend(table: Table) -> str:
    parts = [f"{TASK_LABELS[t]} on {d}/{s} ({', '.join(lab for _, lab in COLUMNS[t])})" for d, s, t in table.groups]
    return ("Columns: " + "; ".join(parts) + ". Percent, except MedR (rank, lower is better); best raw value per "
            "column in bold.")


def to_markdown(table: Table) -> str:
    head, body, flags = _cells(table)
    body = [[f"**{c}**" if f else c for c, f in zip(row, fl)] for row, fl in zip(body, flags)]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) if i < len(head) - len(table.columns()) else "-" * (w + 1) + ":"
                         for i, w in enumerate(widths)) + "|"
    title = f"**{table.title}**\n\n" if table.title else ""
    foot = "\n".join(footer_lines(table.results, table.per_row))
    return f"{title}{line(head)}\n{sep}\n" + "\n".join(line(r) for r in body) + f"\n\n{_legend(table)}\n\n{foot}\n"


def to_csv(table: Table) -> str:
    head, body, flags = _cells(table)
    cols = table.columns()
    n_lead = len(head) - len(cols)
    head = ["method", "checkpoint", "rerank"] + [f"{g[0]}/{g[1]}/{g[2]}/{k}" for g, k, _ in cols]
    if not table.reranked:  # the CSV schema always has the rerank column
        body = [r[:2] + ["none"] + r[2:] for r in body]
        flags = [f[:2] + [False] + f[2:] for f in flags]
    head = head[:3] + list(table.per_row) + head[3:]
    body = [[f"{c}*" if f else c for c, f in zip(row, fl)] for row, fl in zip(body, flags)]
    buf = io.StringIO()
    if table.title:
        buf.write(f"# {table.title}\n")
    csv.writer(buf, lineterminator="\n").writerows([head, *body])
    buf.write("".join(f"# {line}\n" for line in ["best raw value per column marked with a trailing *",
                                                   *footer_lines(table.results, table.per_row)]))
    return buf.getvalue()


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    head, body, flags = _cells(table)
    cols = table.columns()
    n_lead = len(head) - len(cols)
    out = [f"% {latex_escape(table.title)}"] if table.title else []
    out += [r"\begin{tabular}{" + "l" * n_lead + "r" * len(cols) + "}", r"\toprule"]
    spans, rules, start = [], [], n_lead + 1
    for g in table.groups:
        n = len(COLUMNS[g[2]])
        spans.append(rf"\multicolumn{{{n}}}{{c}}{{{latex_escape(f'{g[0]}/{g[1]} {TASK_LABELS[g[2]]}')}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + n - 1}}}")
        start += n
    out.append(" & " * n_lead + " & ".join(spans) + r" \\")
    out.append(" ".join(rules))
    out.append(" & ".join(latex_escape(h) for h in head) + r" \\")
    out.append(r"\midrule")
    for row, fl in zip(body, flags):
        out.append(" & ".join(rf"\textbf{{{latex_escape(c)}}}" if f else latex_escape(c) for c, f in zip(row, fl))
                   + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    out += [f"% {latex_escape(line)}" for line in [_legend(table), *footer_lines(table.results, table.per_row)]]
    return "\n".join(out) + "\n"


RENDER = {"markdown": to_markdown, "csv": to_csv, "latex": to_latex}


def tables_of(results: list[Result], split_protocols: bool = False, per_row: Sequence[str] = ()) -> list[Table]:
    """Protocol-consistent tables (refused, or split with ``split_protocols``; see report.protocol)."""
    sets = check_protocols(results, split=split_protocols, per_row=per_row)
    titles = variant_titles(sets, per_row) if len(sets) > 1 else [""]
    return [build_table(rs, f"Table {i + 1} of {len(sets)}: {t}" if len(sets) > 1 else "", per_row)
            for i, (rs, t) in enumerate(zip(sets, titles))]


def format_table(results: list[Result], fmt: str = "markdown", split_protocols: bool = False,
                 per_row: Sequence[str] = ()) -> str:
    """The comparison table(s) in markdown, CSV or LaTeX (booktabs), each followed by its protocol footer.
    ``per_row``: protocol fields allowed to differ between rows, shown as columns (report.protocol)."""
    if fmt not in RENDER:
        raise ReportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return "\n".join(RENDER[fmt](t) for t in tables_of(results, split_protocols, per_row))
