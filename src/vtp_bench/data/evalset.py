"""What the data layer knows of evaluation: an evaluation *set* (its videos, the clips the video side encodes, the
rows with their per-item inputs) and where one comes from. The tasks (``tasks/``) build and score them; the data
layer only loads their clips, so it imports no task."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

from vtp_bench.data.manifest import ManifestRow


@dataclass(frozen=True)
class Clip:
    """One item the video side encodes: ``path`` between ``start`` and ``end`` seconds (None: the whole file),
    belonging to video ``video`` of the set."""

    video: int
    path: Path
    start: float | None = None
    end: float | None = None


class EvalSet(Protocol):
    manifest: Path
    video_ids: list[str]
    missing: list[str]  # videos of the manifest left out (absent or unreadable, under allow_missing)
    rows: list[ManifestRow]  # each video's first manifest row (boxes, region files: data/inputs.py)

    @property
    def clips(self) -> list[Clip]: ...

    def drop_videos(self, bad: Sequence[int]) -> "EvalSet":
        """The same set without these video indices, their clips (order kept) and their queries."""
        ...


class EvalSetSource(Protocol):
    """What the DataModule asks of an evaluation task (``tasks.base.EvalTask`` implements it): its name, the split
    it scores by default, and how a manifest becomes an evaluation set."""

    name: str

    def default_split(self, dataset: str) -> str: ...

    def load(self, manifest: Path, video_root: Path | None, allow_missing: bool, cfg: Any,
             max_videos: int | None = None, check_videos: bool = True) -> EvalSet: ...
