"""``vtp-bench data shard``: a manifest's (video, caption) pairs -> WebDataset tar shards plus an index.

The layout is the one ``video2dataset`` writes (and open_clip reads): each sample is ``<key>.<ext>`` (the video or
image bytes as they are on disk, e.g. after ``data compress``), ``<key>.txt`` (the caption) and ``<key>.json``
(here: the manifest row), consecutive in the tar. ``index.json`` next to the shards lists every shard with its
sample count: the reader (``data/shards.py``) needs the counts to give every rank the same number of steps.

One sample per manifest row: a video with several captions is stored once per caption (WebVid and CC3M have
one caption per video). An evaluation split reads each video once (by its id, from the sample's ``.json``), so
``once_per_video`` stores only each video's first row there (MSVD's test videos have ~40 captions each).
Keys are the row's position in the manifest, zero-padded (``000000042``), so a shard
sample and the manifest row share the index that seeds their frame sampling.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from vtp_bench.atomic import atomic_path, atomic_write_text
from vtp_bench.data.manifest import read_manifest, resolve_path

SHARD_PATTERN = "shard-%06d.tar"
INDEX = "index.json"
INSTALL_HINT = "pip install 'vtp_bench[shards]' (or: pip install webdataset)"


def require_webdataset() -> Any:
    """The ``webdataset`` module, or an error that says how to install it."""
    try:
        import webdataset
    except ImportError:
        raise ImportError(f"sharded data (data.format=webdataset, `vtp-bench data shard`) needs the webdataset "
                          f"package: {INSTALL_HINT}") from None
    return webdataset


def default_shard_dir(manifest: Path) -> Path:
    """Where training looks for a manifest's shards: ``<manifest dir>/shards/<split>/`` (for a registered dataset
    ``<data.root>/<name>/shards/<split>/``), the split being the manifest's stem."""
    return manifest.parent / "shards" / manifest.stem


def sample_key(index: int) -> str:
    return f"{index:09d}"


def _close_quietly(sink: Any) -> None:
    """Close a tar writer whatever happens (after an error its bytes go to a file about to be removed), so that
    garbage collection does not write into the closed file later."""
    with contextlib.suppress(Exception):
        sink.close()


def write_shards(manifest: Path, out: Path | None = None, shard_size: int = 1000,
                 video_root: Path | None = None, once_per_video: bool = False) -> dict[str, Any]:
    """Write the shards and ``index.json``; returns the index. Rows whose file is missing are left out (listed
    in the index: they have no bytes to store); files that exist are stored as they are, and an unreadable one
    is skipped and counted by training, as with files. Earlier shards in ``out`` are replaced, atomically: the new
    shards are written beside them (so re-sharding in place needs room for both sets) and renamed into place only
    when all are written, then the index; a failed write (disk full) leaves the earlier set and index as they were.
    """
    wds = require_webdataset()
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    manifest = Path(manifest)
    rows = read_manifest(manifest)
    out = Path(out) if out is not None else default_shard_dir(manifest)
    out.mkdir(parents=True, exist_ok=True)
    missing: list[str] = []
    seen: set[str] = set()
    written = 0
    with contextlib.ExitStack() as pending:  # each shard's atomic_path: all renamed on success, all removed on error
        sink, f = None, None
        for i, row in enumerate(rows):
            if once_per_video and row.video_id in seen:
                continue
            seen.add(row.video_id)
            path = resolve_path(row.path, manifest, video_root)
            try:
                data = path.read_bytes()
            except OSError:
                missing.append(row.video_id)
                continue
            if written % shard_size == 0:  # the next shard
                if sink is not None:
                    sink.close()
                    f.close()
                f = open(pending.enter_context(atomic_path(out / (SHARD_PATTERN % (written // shard_size)))), "wb")
                pending.callback(f.close)
                sink = wds.TarWriter(f)
                pending.callback(_close_quietly, sink)
            ext = path.suffix.lower().lstrip(".") or "mp4"
            sink.write({"__key__": sample_key(i), ext: data, "txt": row.text,
                        "json": json.dumps(row.to_dict(), ensure_ascii=False).encode("utf-8")})
            written += 1
        if sink is not None:
            sink.close()
        (out / INDEX).unlink(missing_ok=True)  # a crash while the shards are renamed leaves no index, not a wrong one
    counts = [shard_size] * (written // shard_size) + ([written % shard_size] if written % shard_size else [])
    index = {
        "format": "webdataset",
        "manifest": str(manifest),
        "samples": written,
        "once_per_video": once_per_video,
        "shards": [{"name": SHARD_PATTERN % i, "samples": n} for i, n in enumerate(counts)],
        "missing": missing,
    }
    names = {s["name"] for s in index["shards"]}
    for old in out.glob("shard-*.tar"):  # earlier shards the new set does not have
        if old.name not in names:
            old.unlink()
    atomic_write_text(out / INDEX, json.dumps(index, indent=1))
    return index
