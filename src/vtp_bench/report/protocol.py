"""The evaluation protocol of a result, the check that refuses to merge results scored differently, and the
protocol footer printed under every table.

A table may only hold results of the same (dataset, split, task) that were scored the same way: same test file,
same number of videos, frames, sampler, decoder, input size (``COMMON_FIELDS``), and the fields the task declares
(``TaskReport.protocol``: retrieval's queries and v2t policy, grounding's candidates, the class prompts).
Re-ranking is not part of it: a re-ranked row is a labelled extra of its raw row.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

from vtp_bench.report.results import ReportError, task_of
from vtp_bench.report.tasks import report_of, task_order

Result = dict[str, Any]


class ProtocolMismatchError(ReportError):
    """Results of one (dataset, split, task) evaluated under different protocols."""


def _sha(r: Result) -> Any:
    return (r.get("manifest_sha256") or "")[:12] or None


# field name -> how to read it from a results JSON (missing in older files: None)
COMMON_FIELDS: dict[str, Callable[[Result], Any]] = {
    "test file sha256": _sha,
    "num_videos": lambda r: r.get("num_videos"),
    "frames": lambda r: r.get("frames"),
    "sampler": lambda r: r.get("sampler"),
    "decoder": lambda r: r.get("decoder"),
    "img_size": lambda r: r.get("img_size"),
    "decode_size": lambda r: r.get("decode_size"),
}
def task_fields(task: str) -> dict[str, Callable[[Result], Any]]:
    """The protocol fields a task declares (its ``TaskReport.protocol``)."""
    return report_of(task).protocol


def protocol_fields() -> list[str]:
    from vtp_bench.registry import TASKS

    return list(dict.fromkeys([*COMMON_FIELDS, *(f for t in TASKS.names() for f in task_fields(t))]))


def check_per_row(per_row: Sequence[str]) -> None:
    unknown = [f for f in per_row if f not in protocol_fields()]
    if unknown:
        raise ReportError(f"--per-row: unknown protocol field {unknown[0]!r} (fields: {', '.join(protocol_fields())})")


def protocol_of(result: Result, per_row: Sequence[str] = ()) -> dict[str, Any]:
    """The fields that must agree for two results of one (dataset, split, task) to share a table, less the
    ``per_row`` ones (allowed to differ: shown as a column of the table)."""
    fields = {**COMMON_FIELDS, **task_fields(task_of(result))}
    return {name: read(result) for name, read in fields.items() if name not in per_row}


def group_key(result: Result) -> tuple[str, str, str]:
    return (result["dataset"], result["split"], task_of(result))


def _name(result: Result) -> str:
    return Path(result.get("file") or result.get("experiment") or result["method"]).name


def _frozen(proto: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((k, repr(v)) for k, v in proto.items())


def protocol_variants(results: list[Result], per_row: Sequence[str] = ()) -> list[list[Result]]:
    """Results of one group, split by protocol (first-seen order)."""
    variants: dict[tuple, list[Result]] = {}
    for r in results:
        variants.setdefault(_frozen(protocol_of(r, per_row)), []).append(r)
    return list(variants.values())


def describe_differences(variants: list[list[Result]], per_row: Sequence[str] = ()) -> list[str]:
    """One line per differing field: ``frames: 4 (a.json) vs 8 (b.json)``."""
    protos = [protocol_of(v[0], per_row) for v in variants]
    lines = []
    for field in protos[0]:
        values = [p[field] for p in protos]
        if len({repr(v) for v in values}) > 1:
            parts = [f"{v} ({', '.join(_name(r) for r in var)})" for v, var in zip(values, variants)]
            lines.append(f"{field}: {' vs '.join(parts)}")
    return lines


def check_protocols(results: list[Result], split: bool = False, per_row: Sequence[str] = ()) -> list[list[Result]]:
    """The results as protocol-consistent sets, one per table. Default: one set, or ProtocolMismatchError naming
    every differing field with its values and files. ``split``: set i holds every group's i-th protocol variant.
    ``per_row``: fields allowed to differ (the table shows them per row), e.g. frames when each method is scored
    at its own frame count."""
    check_per_row(per_row)
    groups: dict[tuple[str, str, str], list[Result]] = defaultdict(list)
    for r in results:
        groups[group_key(r)].append(r)
    per_group = {k: protocol_variants(v, per_row) for k, v in groups.items()}
    mixed = {k: v for k, v in per_group.items() if len(v) > 1}
    if mixed and not split:
        msg = ["results evaluated under different protocols are not merged into one table:"]
        for (dataset, sp, task), variants in mixed.items():
            msg.append(f"  {dataset}/{sp} {task}:")
            msg += [f"    {line}" for line in describe_differences(variants, per_row)]
        msg.append("re-evaluate them under one protocol, or pass --split-protocols for one table per protocol, or "
                   "--per-row FIELD to show a field that may differ (e.g. frames) as a column of the table")
        raise ProtocolMismatchError("\n".join(msg))
    n = max(len(v) for v in per_group.values())
    return [[r for variants in per_group.values() if i < len(variants) for r in variants[i]] for i in range(n)]


def variant_titles(tables: list[list[Result]], per_row: Sequence[str] = ()) -> list[str]:
    """For split tables: what sets each table apart (the fields that differ between the tables' results)."""
    out = []
    for rs in tables:
        parts = []
        for key in dict.fromkeys(group_key(r) for r in rs):
            mine = protocol_of(next(r for r in rs if group_key(r) == key), per_row)
            others = [protocol_of(r, per_row) for t in tables for r in t if group_key(r) == key and t is not rs]
            diff = [f"{f}={v}" for f, v in mine.items() if any(repr(o[f]) != repr(v) for o in others)]
            if diff:
                parts.append(f"{key[0]}/{key[1]} {key[2]}: {', '.join(diff)}")
        out.append("; ".join(parts) or "protocol as below")
    return out


# --- footer --------------------------------------------------------------------------------------------------

def _size(r: Result) -> str:
    decode = r.get("decode_size")
    how = f"decoded at short side {decode}" if decode else "decoded at native size"
    return f"{r.get('img_size')} px input ({how})"


def group_line(rs: list[Result], per_row: Sequence[str] = ()) -> str:
    """One footer line for one (dataset, split, task): its protocol (shared by its results, checked before)."""
    r = rs[0]
    dataset, split, task = group_key(r)
    val = lambda f: "per-row" if f in per_row else r.get(f)  # noqa: E731
    frames = f"{val('frames')} frames ({val('sampler')} sampler), {val('decoder')} decoder, "
    frames += _size(r) if not {"img_size", "decode_size"} & set(per_row) else "input size per row"
    sha = f"test file sha256 {_sha(r)}" if _sha(r) else "test file not recorded"
    what = report_of(task).describe(rs)
    missing = sum(x.get("num_missing") or 0 for x in rs)
    gone = f"; {missing} unreadable videos left out (allow_missing)" if missing else ""
    return f"{dataset}/{split} {task}: {what}; {frames}; {sha}{gone}"


def load_line(results: list[Result]) -> str:
    """Checkpoint load report: our own checkpoints load every tensor; released ones say what was not loaded."""
    own = sorted({r.get("checkpoint", "?") for r in results if not r.get("checkpoint_load")})
    parts = [f"{len(own)} vtp_bench checkpoint(s), every tensor loaded"] if own else []
    seen = set()
    for r in results:
        rep = r.get("checkpoint_load")
        if rep and r.get("checkpoint") not in seen:
            seen.add(r.get("checkpoint"))
            parts.append(f"{Path(r.get('checkpoint', '?')).name} ({rep.get('source')}): {rep.get('loaded')} tensors "
                         f"loaded, {len(rep.get('untouched') or [])} model tensors not in the file, "
                         f"{len(rep.get('ignored') or [])} file tensors not used")
    return "checkpoints: " + "; ".join(parts)


def footer_lines(results: list[Result], per_row: Sequence[str] = ()) -> list[str]:
    """Per dataset: one line per (split, task) and the checkpoint load report."""
    by_dataset: dict[str, dict[tuple, list[Result]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        by_dataset[r["dataset"]][group_key(r)].append(r)
    lines = []
    for dataset, groups in by_dataset.items():
        lines.append(f"Protocol, {dataset}:")
        keys = sorted(groups, key=lambda g: (task_order(g[2]), g[1]))
        lines += [f"- {group_line(groups[k], per_row)}" for k in keys]
        if per_row:
            lines.append(f"- allowed to differ between rows (shown per row): {', '.join(per_row)}")
        lines.append(f"- {load_line([r for rs in groups.values() for r in rs])}")
    return lines
