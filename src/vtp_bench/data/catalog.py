"""Datasets by name: where each one's manifest and videos live under the data root.

``<root>/<name>/<split>.jsonl`` (the manifest schema of data_manifests/README.md), videos resolved relative
to the manifest unless the row's path is absolute. Real benchmarks join this registry with their
converters (``vtp-bench data convert``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vtp_bench.registry import DATASETS


class DataNotFoundError(FileNotFoundError):
    """A dataset's manifest is not where the config says; the message says which command makes it."""


@dataclass(frozen=True)
class DatasetSource:
    name: str
    split: str
    manifest: Path
    video_root: Path | None = None


def locate(name: str, root: str | Path, split: str) -> DatasetSource:
    """Resolve a registered dataset name to its manifest, with an actionable error when it is missing."""
    return DATASETS.get(name)(root=Path(root), split=split)


@DATASETS.register("synth")
def synth(root: Path, split: str) -> DatasetSource:
    """The procedural synthetic dataset (``vtp-bench data synth``); splits train/val/test and grounding."""
    manifest = root / "synth" / f"{split}.jsonl"
    if not manifest.is_file():
        raise DataNotFoundError(
            f"dataset 'synth' split {split!r}: expected manifest {manifest} is missing; create it with "
            f"`vtp-bench data synth --out {root / 'synth'} --videos 1000 --seed 0` "
            f"(or set data.root / VTP_DATA_ROOT to where it was generated)"
        )
    return DatasetSource("synth", split, manifest)
