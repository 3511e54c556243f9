"""The class list of a classification manifest (zero-shot action recognition): which labels exist, in which
order, and the name each class's prompt is made from.

- A ``classes.json`` next to the manifest (the synthetic dataset writes one) gives the order (``classes``) and
  the names (``phrases``: ``left`` -> ``moves left``, so the template ``an object {}`` gives its prompts).
- Otherwise the manifest's rows do: the classes are its distinct ``label`` values, sorted, and each class's name
  is the ``text`` of its rows (the HMDB51 / UCF101 converters write the readable class name there:
  ``brush_hair`` -> ``brush hair``, ``ApplyEyeMakeup`` -> ``apply eye makeup``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from vtp_bench.data.manifest import ManifestError, ManifestRow, read_manifest


@dataclass(frozen=True)
class ClassList:
    labels: list[str]  # the manifest's label values, in class-index order
    names: list[str]  # what the prompt template is filled with, one per class
    template: str | None = None  # the dataset's own prompt template (classes.json ``template``), if it has one

    def index(self, rows: Sequence[ManifestRow]) -> list[int]:
        """The class index of each row, by its ``label``."""
        where = {label: i for i, label in enumerate(self.labels)}
        out = []
        for r in rows:
            if r.label not in where:
                raise ManifestError(f"row {r.text_id!r} has label {r.label!r}, which is not one of the "
                                    f"{len(self.labels)} classes")
            out.append(where[r.label])
        return out


def read_classes(manifest: str | Path, rows: Sequence[ManifestRow] | None = None) -> ClassList:
    """The classes of ``manifest`` (see the module docstring); ``rows`` saves reading the manifest again."""
    manifest = Path(manifest)
    rows = read_manifest(manifest) if rows is None else rows
    unlabelled = [r.text_id for r in rows if r.label is None]
    if unlabelled:
        raise ManifestError(f"{manifest}: {len(unlabelled)} row(s) have no 'label' (e.g. {unlabelled[0]!r}); "
                            f"zero-shot classification needs the class of every video")
    side = manifest.parent / "classes.json"
    if side.is_file():
        meta = json.loads(side.read_text(encoding="utf-8"))
        labels = list(meta["classes"])
        phrases = meta.get("phrases", {})
        names = [phrases.get(c, c) for c in labels]
        return ClassList(labels, names, meta.get("template"))
    names_of: dict[str, set[str]] = {}
    for r in rows:
        names_of.setdefault(r.label, set()).add(r.text)  # type: ignore[arg-type]
    labels = sorted(names_of)
    bad = [c for c in labels if len(names_of[c]) > 1]
    if bad:
        raise ManifestError(f"{manifest}: class {bad[0]!r} has rows with different texts "
                            f"({sorted(names_of[bad[0]])[:3]}); a classification manifest's text is the class name")
    return ClassList(labels, [next(iter(names_of[c])) for c in labels])
