"""Results -> table rows: one row per (method, checkpoint, re-ranking), the training seeds of one experiment folded
into one row, each cell holding the metric of every folded result and their per-item outcomes (``per_query``).

Folding: results with a recorded training ``seed`` of the same method and experiment fold into one row when their
seeds differ in every (dataset, split, task) they were scored on (the protocol check has already made each group
one protocol). Where two results of one experiment share a seed (the experiment trained twice with other
overrides), they are told apart by run version with the seed masked (``demo-seed0`` -> ``demo-seed*``), and
failing that each keeps its own row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vtp_bench.report.protocol import ReportError, group_key, protocol_of
from vtp_bench.tasks.base import Column

Result = dict[str, Any]
Group = tuple[str, str, str]  # (dataset, split, task)
_SEED = re.compile(r"seed\d+")  # the seed part of a run version: demo-seed0, seed2


def checkpoint_label(result: Result) -> str:
    """``runs/EXP/VERSION/checkpoints/last.ckpt`` -> ``EXP/VERSION/last``; any other file: its name."""
    p = Path(str(result.get("checkpoint") or result.get("experiment") or "?"))
    if p.parent.name == "checkpoints" and len(p.parts) >= 4:
        return f"{p.parts[-4]}/{p.parts[-3]}/{p.stem}"
    return p.name


@dataclass
class Cell:
    """One metric of one row: ``values`` per folded result (seed); ``items`` [n_seeds, n_items] per-item outcomes
    aligned on ``ids`` (None when a result carries none); filled by ``report.significance``: ``interval``."""

    values: list[float]
    items: np.ndarray | None = None
    ids: tuple[str, ...] | None = None
    statistic: str = "mean"
    interval: tuple[float, float] | None = None

    @property
    def value(self) -> float:
        return float(np.mean(self.values))


@dataclass
class Row:
    method: str
    checkpoint: str
    rerank: str = "none"
    cells: dict[tuple[Group, str], Cell] = field(default_factory=dict)
    per_row: dict[str, list[Any]] = field(default_factory=dict)  # protocol fields shown per row (values seen)
    files: dict[Group, list[str]] = field(default_factory=dict)
    members: dict[Group, list[Result]] = field(default_factory=dict)
    reference: str | None = None  # a paper's reported numbers (report.paper): its source; never marked

    @property
    def seeds(self) -> int:
        """Number of training runs (seeds) folded into the row (1 for a single result)."""
        return max((len(m) for m in self.members.values()), default=1)

    @property
    def results(self) -> list[Result]:
        return [r for rs in self.members.values() for r in rs]

    def cost(self) -> dict[str, Any]:
        """The row's training cost: parameters of its first result, steps / samples / wall time averaged over
        its folded results (each seed's own run); keys missing where no result recorded them."""
        costs = [r.get("cost") or {} for r in self.results]
        out: dict[str, Any] = {}
        for k in ("trainable_params", "total_params", "optimizer_steps", "samples_seen", "train_wall_s"):
            vals = [c[k] for c in costs if c.get(k) is not None]
            if vals:
                out[k] = vals[0] if k.endswith("params") else float(np.mean(vals))
        return out


def _fold_labels(results: list[Result]) -> dict[int, str]:
    """id(result) -> the row label (checkpoint column) its raw scores go to."""
    labels = {id(r): checkpoint_label(r) for r in results}

    def distinct_seeds(rs: list[Result]) -> bool:
        by_group: dict[Group, list[Any]] = {}
        for r in rs:
            by_group.setdefault(group_key(r), []).append(r.get("seed"))
        return all(len(set(s)) == len(s) for s in by_group.values())

    bases: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        if r.get("seed") is not None:
            bases.setdefault((r["method"], str(r.get("experiment"))), []).append(r)
    for rs in bases.values():
        if len({labels[id(r)] for r in rs}) < 2:
            continue  # one checkpoint (evaluated on several tasks): nothing to fold
        parts = [rs] if distinct_seeds(rs) else None
        if parts is None:
            by_version: dict[str, list[Result]] = {}
            for r in rs:
                version = str(r.get("run_version") or checkpoint_label(r))
                by_version.setdefault(_SEED.sub("seed*", version), []).append(r)
            parts = [p for p in by_version.values() if distinct_seeds(p)]
        for part in parts:
            names = sorted({_SEED.sub("seed*", labels[id(r)]) for r in part})
            if len({labels[id(r)] for r in part}) > 1:
                label = names[0] if len(names) == 1 else f"{part[0].get('experiment')} ({len(part)} runs)"
                labels.update({id(r): label for r in part})
    return labels


def _aligned(members: list[Result], column: Column) -> tuple[np.ndarray, tuple[str, ...]] | None:
    """[n_seeds, n_items] per-item outcomes of a column over the folded results, on the items every one of them
    scored (in the first one's order), or None when one of them has no per-item outcomes for it."""
    key = column.items_key
    rows, ids0 = [], None
    for r in members:
        pq = r.get("per_query") or {}
        vals, ids = pq.get(key), pq.get(column.ids_key)
        if vals is None:
            return None
        ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(len(vals))]
        if len(ids) != len(vals):
            raise ReportError(f"{r.get('file', '?')}: per_query[{key!r}] has {len(vals)} values for {len(ids)} ids")
        rows.append(dict(zip(ids, vals)))
        ids0 = ids0 if ids0 is not None else ids
    shared = tuple(i for i in ids0 or [] if all(i in m for m in rows))
    if not shared:
        return None
    return np.array([[m[i] for i in shared] for m in rows], dtype=np.float64), shared


def build_rows(results: list[Result], columns: dict[str, tuple[Column, ...]], per_row: tuple[str, ...] = ()
               ) -> list[Row]:
    """``columns``: each task's columns (its ``TaskReport``)."""
    labels = _fold_labels(results)
    rows: dict[tuple[str, str, str], Row] = {}
    for r in results:
        entries = [("none", r.get("metrics") or {})]
        if r.get("metrics_reranked"):
            entries.append((((r.get("protocol") or {}).get("rerank") or {}).get("name", "reranked"),
                            r["metrics_reranked"]))
        g = group_key(r)
        for rerank, metrics in entries:
            key = (r["method"], labels[id(r)], rerank)
            row = rows.setdefault(key, Row(*key, reference=r.get("reference")))
            members = row.members.setdefault(g, [])
            same = [m for m in members if m.get("seed") == r.get("seed")]
            if same:
                if same[0]["metrics"] == metrics:
                    continue  # the same raw scores twice (one checkpoint evaluated with two re-rankings)
                raise ReportError(f"two results for {key[0]} {key[1]} on {g[0]}/{g[1]} {g[2]}: "
                                  f"{same[0].get('file', '?')} and {r.get('file', '?')} (keep one)")
            scored = dict(r, metrics=metrics, per_query=(r.get("per_query") if rerank == "none" else None))
            members.append(scored)
            row.files.setdefault(g, []).append(r.get("file", "?"))
            proto = protocol_of(r)
            for f in per_row:
                if proto.get(f) not in row.per_row.setdefault(f, []):
                    row.per_row[f].append(proto.get(f))
    for row in rows.values():
        for g, members in row.members.items():
            for column in columns[g[2]]:
                metric = column.key
                if any(m["metrics"].get(metric) is None for m in members):
                    continue
                cell = Cell([float(m["metrics"][metric]) for m in members], statistic=column.statistic)
                aligned = _aligned(members, column)
                if aligned is not None:
                    cell.items, cell.ids = aligned
                row.cells[(g, metric)] = cell
    return list(rows.values())
