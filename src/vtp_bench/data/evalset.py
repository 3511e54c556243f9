"""What the data layer knows of evaluation: an evaluation *set* (its videos, the clips the video side encodes, the
rows with their per-item inputs) and where one comes from. The tasks (``tasks/``) build and score them; the data
layer only loads their clips, so it imports no task."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol, Sequence

from vtp_bench.data.manifest import ManifestError, ManifestRow, resolve_path


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
    rows: list[ManifestRow]  # each video's first manifest row (boxes, region files: data/inputs/)

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


class MissingVideosError(FileNotFoundError):
    """An evaluation set lists videos that are not on disk (or cannot be read)."""


@dataclass
class Videos:
    """The distinct videos of a manifest in first-appearance order, those present on disk (``index``: id ->
    position), with the window of their first row, and the ids of those missing."""

    ids: list[str]
    paths: list[Path]
    windows: list[tuple[float | None, float | None]]
    missing: list[str]
    rows: list[ManifestRow]  # each video's first row (its boxes, region files)

    @property
    def index(self) -> dict[str, int]:
        return {v: i for i, v in enumerate(self.ids)}


def unique_videos(rows: Sequence[ManifestRow], manifest: Path, video_root: Path | None = None,
                  allow_missing: bool = False, max_videos: int | None = None, check_videos: bool = True) -> Videos:
    """Every evaluation set's videos: refuses missing files (naming the count and one path) unless
    ``allow_missing``, which leaves them out and lists them; ``max_videos`` keeps the first N;
    ``check_videos=False`` when the method reads no pixels (region features): files are not looked up."""
    if not rows:
        raise ManifestError(f"{manifest} holds no rows, so there is nothing to score; write or convert the test "
                            "split into it (vtp-bench data synth / convert / from-folder)")
    order: dict[str, int] = {}
    first: list[ManifestRow] = []
    for r in rows:
        if r.video_id not in order:
            if max_videos is not None and len(order) >= max_videos:
                continue
            order[r.video_id] = len(order)
            first.append(r)
    paths = [resolve_path(r.path, manifest, video_root) for r in first]
    missing = {vid for vid, i in order.items() if check_videos and not paths[i].is_file()}
    if missing and not allow_missing:
        example = paths[order[sorted(missing)[0]]]
        raise MissingVideosError(
            f"{manifest}: {len(missing)} of {len(order)} videos are missing (e.g. {example}); "
            "fix the paths / --video-root, or pass --allow-missing to score the rest (the count is recorded)"
        )
    if order and len(missing) == len(order):  # --allow-missing with nothing left: say so, not score nothing
        example = paths[order[sorted(missing)[0]]]
        raise MissingVideosError(
            f"{manifest}: none of its {len(order)} videos exist (e.g. {example}), so nothing readable is left to "
            "score; fix the paths / --video-root / --data-root"
        )
    keep = [order[vid] for vid in order if vid not in missing]
    return Videos([first[i].video_id for i in keep], [paths[i] for i in keep], [(first[i].start, first[i].end)
                  for i in keep], sorted(missing), [first[i] for i in keep])


class DropsVideos:
    """``drop_videos`` for every evaluation set (a dataclass), from the fields it declares: ``per_video`` lists
    hold one entry per video, ``per_query`` lists one per query, ``video_of_query`` names the list (or tensor) of
    each query's video index. Dropped videos take their queries with them and are added to ``missing``."""

    per_video: ClassVar[tuple[str, ...]] = ("video_ids", "rows")
    per_query: ClassVar[tuple[str, ...]] = ()
    video_of_query: ClassVar[str | None] = None

    def drop_videos(self, bad: Sequence[int]) -> Any:
        drop = set(bad)
        ids: list[str] = getattr(self, "video_ids")
        keep = [i for i in range(len(ids)) if i not in drop]
        changes: dict[str, Any] = {}
        for name in self.per_video:  # a list left empty (rows of a set built by hand) stays empty
            values = getattr(self, name)
            changes[name] = [values[i] for i in keep] if len(values) == len(ids) else values
        if self.video_of_query is not None:
            new = {old: k for k, old in enumerate(keep)}
            of = getattr(self, self.video_of_query)
            video = [int(v) for v in of]
            queries = [j for j, v in enumerate(video) if v in new]
            changes.update({name: [getattr(self, name)[j] for j in queries] for name in self.per_query})
            mapped = [new[video[j]] for j in queries]
            changes[self.video_of_query] = of.new_tensor(mapped) if hasattr(of, "new_tensor") else mapped
        changes["missing"] = list(getattr(self, "missing")) + [ids[i] for i in sorted(drop)]
        return replace(self, **changes)  # type: ignore[type-var]


@dataclass
class SharedClips:
    """The clips of several evaluation sets, each encoded once: a clip is its video file and window, so two tasks
    on the same videos (retrieval and zero-shot classification of one test split, say) share every clip. It reads
    as one evaluation set (``clips``, ``video_ids``, ``rows``, ``manifest``) for the clip loader; ``positions[i]``
    gives set i's clips' positions here. Rows keep their box files absolute (sets may come from several
    manifests); ``media`` says where each video's bytes come from (a data format's reader, or None: the file)."""

    manifest: Path
    video_ids: list[str]
    rows: list[ManifestRow]
    clips: list[Clip]
    positions: list[list[int]]
    media: dict[str, Any]  # resolved video path -> (its set's reader or None, the set's id of the video)
    missing: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, sets: Sequence[Any], media: Sequence[Any] | None = None) -> "SharedClips":
        video_of: dict[str, int] = {}
        clip_of: dict[tuple[str, float | None, float | None], int] = {}
        ids: list[str] = []
        rows: list[ManifestRow] = []
        clips: list[Clip] = []
        where: dict[str, Any] = {}
        positions: list[list[int]] = []
        for k, eset in enumerate(sets):
            mine = []
            for clip in eset.clips:
                path = str(Path(clip.path).resolve())
                if path not in video_of:
                    video_of[path] = len(ids)
                    ids.append(eset.video_ids[clip.video])
                    where[path] = ((media[k] if media else None), eset.video_ids[clip.video])
                    if len(eset.rows) == len(eset.video_ids):
                        row = eset.rows[clip.video]
                        boxes = str(resolve_path(row.boxes, eset.manifest).resolve()) if row.boxes else None
                        rows.append(replace(row, boxes=boxes))
                key = (path, clip.start, clip.end)
                if key not in clip_of:
                    clip_of[key] = len(clips)
                    clips.append(Clip(video_of[path], clip.path, clip.start, clip.end))
                mine.append(clip_of[key])
            positions.append(mine)
        return cls(sets[0].manifest, ids, rows if len(rows) == len(ids) else [], clips, positions, where)

    def __call__(self, video_id: str, path: Path) -> Any:
        """The clip loader's ``media``: each video read as its own set's data format reads it."""
        reader, own_id = self.media[str(Path(path).resolve())]
        return path if reader is None else reader(own_id, path)
