"""``vtp-bench data check``: open every video of a manifest in parallel, report what cannot be trained on.

Each distinct (video, window) is decoded at max(4, ``min_frames``) uniform positions through the training
reader (so a file that fails here would fail in training), at a small size to keep it quick. Problems:

- ``missing``: the file does not exist;
- ``unreadable``: empty, not a video, corrupt or truncated (the reader's message says which);
- ``too_short``: fewer frames (in the row's window) than ``--min-frames``;
- ``window``: the row's ``[start, end)`` starts after the end of the file (an annotation for another cut).

The cleaned manifest keeps every row whose video passed, in the original order.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from vtp_bench.data.manifest import read_manifest, resolve_path, write_manifest
from vtp_bench.data.video import VideoReadError, WindowOutsideVideoError, read_frames

PROBE_FRAMES = 4
PROBE_SIZE = 32


@dataclass(frozen=True)
class Problem:
    video_id: str
    path: str
    kind: str  # missing | unreadable | too_short | window
    detail: str


@dataclass
class CheckReport:
    manifest: str
    rows: int
    videos: int
    clips: int  # distinct (video, window) pairs: what was opened
    kept_rows: int
    problems: list[Problem] = field(default_factory=list)
    out: str | None = None

    def summary(self) -> str:
        kinds = Counter(p.kind for p in self.problems)
        lines = [f"{self.manifest}: {self.videos} videos, {self.rows} rows, {self.clips} clips opened; "
                 f"{self.clips - len(self.problems)} OK, {len(self.problems)} with problems "
                 f"({', '.join(f'{k} {n}' for k, n in sorted(kinds.items())) or 'none'})"]
        lines += [f"  {p.kind:<10} {p.video_id}: {p.detail}" for p in self.problems[:20]]
        if len(self.problems) > 20:
            lines.append(f"  ... and {len(self.problems) - 20} more (--report FILE lists them all)")
        if self.out:
            lines.append(f"cleaned manifest ({self.kept_rows} rows) written to {self.out}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def _check_one(job: tuple[str, float | None, float | None, int]) -> tuple[str, str] | None:
    """(kind, detail) of a video's problem, or None. Runs in a worker process."""
    path, start, end, min_frames = job
    if not Path(path).is_file():
        return "missing", f"{path} does not exist"
    try:  # the reader returns min(asked, available) frames: asking for >= min_frames tells a short clip
        _, indices = read_frames(path, max(PROBE_FRAMES, min_frames), "uniform", size=PROBE_SIZE, start=start, end=end)
    except WindowOutsideVideoError as e:
        return "window", str(e)
    except VideoReadError as e:
        return "unreadable", str(e)
    if len(indices) < min_frames:
        where = " in the window" if start is not None or end is not None else ""
        return "too_short", f"{len(indices)} frame(s){where}, fewer than {min_frames}"
    return None


def check_manifest(manifest: Path, out: Path | None = None, min_frames: int = 1, workers: int | None = None,
                   video_root: str | Path | None = None, progress: bool = True) -> CheckReport:
    rows = read_manifest(manifest)
    jobs: dict[tuple[str, float | None, float | None], str] = {}
    for r in rows:
        key = (str(resolve_path(r.path, manifest, video_root)), r.start, r.end)
        jobs.setdefault(key, r.video_id)
    keys = list(jobs)
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = list(tqdm(pool.map(_check_one, [(*k, min_frames) for k in keys], chunksize=8), total=len(keys),
                            desc="checking videos", unit="video", disable=not progress))
    bad = {k: res for k, res in zip(keys, results) if res is not None}
    problems = [Problem(jobs[k], k[0], kind, detail) for k, (kind, detail) in bad.items()]
    kept = [r for r in rows if (str(resolve_path(r.path, manifest, video_root)), r.start, r.end) not in bad]
    if out is not None:  # paths as seen from the new file's folder (it may live elsewhere)
        folder = Path(out).resolve().parent
        kept = [replace(r, path=os.path.relpath(resolve_path(r.path, manifest, video_root).resolve(), folder))
                if folder != Path(manifest).resolve().parent or video_root is not None else r for r in kept]
        write_manifest(out, kept)
    return CheckReport(str(manifest), len(rows), len({r.video_id for r in rows}), len(keys), len(kept), problems,
                       str(out) if out is not None else None)
