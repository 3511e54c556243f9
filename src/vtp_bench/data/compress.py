"""``vtp-bench data compress``: re-encode a corpus once so that training reads small files that seek fast.

Every distinct video of a manifest is decoded and written again as H.264 (yuv420p, no audio) with the short
side scaled to ``short_side`` (never upscaled), the frame rate capped at ``max_fps`` (frames dropped by
timestamp, so seconds stay seconds and grounding windows stay valid), and a keyframe every ``gop`` frames:
the seeking reader then decodes at most ``gop`` frames per sampled frame. This is the recipe of VindLU /
CLIP4Clip / Prompt Switch's ffmpeg scripts (docs/protocols.md), with a short GOP added.

Videos are written to ``<out_dir>/videos/<same relative path>`` (``.mp4`` appended unless already there)
through a temporary file and an atomic rename, so an interrupted run resumes where it stopped (finished files
are skipped; ``<out_dir>/compress.json`` records the settings, and resuming with other settings is refused).
The new manifest ``<out_dir>/<manifest name>`` points at them; rows whose video failed are left out and
reported.
"""

from __future__ import annotations

import dataclasses
import json
import os
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
from tqdm import tqdm

from vtp_bench.atomic import atomic_write_text
from vtp_bench.data.manifest import ManifestError, read_manifest, resolve_path, write_manifest
from vtp_bench.data.video import VideoReadError, open_video


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def compress_video(src: Path, dst: Path, short_side: int = 224, max_fps: float | None = None, gop: int = 8,
                   crf: int = 23) -> int:
    """Re-encode one video (see the module notes); returns the number of frames written."""
    container, stream = open_video(src)
    tmp = dst.with_name(dst.name + ".part.mp4")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        w, h = stream.codec_context.width, stream.codec_context.height
        scale = min(1.0, short_side / min(w, h))
        out_w, out_h = _even(w * scale), _even(h * scale)
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        out_rate = Fraction(rate) if max_fps is None or rate <= max_fps else Fraction(max_fps).limit_denominator(1001)
        written = 0
        with av.open(str(tmp), "w", format="mp4") as out:
            ost = out.add_stream("libx264", rate=out_rate)
            ost.width, ost.height, ost.pix_fmt = out_w, out_h, "yuv420p"
            ost.codec_context.options = {"crf": str(crf), "preset": "veryfast", "g": str(gop),
                                         "keyint_min": str(gop), "sc_threshold": "0", "bframes": "0"}
            ost.codec_context.time_base = Fraction(1, 1) / out_rate
            start = None
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else written / float(rate)
                start = t if start is None else start
                if float(t - start) * float(out_rate) < written - 1e-3:  # fps cap: this slot is already filled
                    continue
                img = frame.reformat(width=out_w, height=out_h, format="yuv420p")
                img.pts, img.time_base = written, ost.codec_context.time_base
                for packet in ost.encode(img):
                    out.mux(packet)
                written += 1
            for packet in ost.encode():
                out.mux(packet)
        if written == 0:
            raise VideoReadError(f"{src}: no frame could be decoded")
        os.replace(tmp, dst)
        return written
    except (av.FFmpegError, OSError, ValueError) as e:
        raise VideoReadError(f"{src}: cannot re-encode ({e})") from None
    finally:
        container.close()
        tmp.unlink(missing_ok=True)


def _job(args: tuple[str, str, int, float | None, int, int]) -> str | None:
    src, dst, short_side, max_fps, gop, crf = args
    if Path(dst).is_file():
        return None  # done by an earlier run
    try:
        compress_video(Path(src), Path(dst), short_side, max_fps, gop, crf)
    except VideoReadError as e:
        return str(e)
    return None


def _target(row_path: str) -> str:
    """``videos/<row path>`` with the extension made ``.mp4``: ``a/x.mp4`` stays, ``a/x.mpg`` becomes
    ``a/x.mpg.mp4`` (so ``x.mpg`` and ``x.mp4`` never share a file); absolute paths keep their folders."""
    rel = Path(row_path)
    rel = Path(*[p for p in rel.parts if p not in ("..", rel.anchor)])
    if rel.suffix.lower() != ".mp4":
        rel = rel.with_name(rel.name + ".mp4")
    return (Path("videos") / rel).as_posix()


def compress_manifest(manifest: Path, out_dir: Path, short_side: int = 224, max_fps: float | None = None,
                      gop: int = 8, crf: int = 23, workers: int | None = None, video_root: str | Path | None = None,
                      progress: bool = True) -> str:
    """Re-encode every video of ``manifest`` into ``out_dir`` and write the manifest that reads them."""
    rows = read_manifest(manifest)
    out_dir = Path(out_dir)
    settings = {"short_side": short_side, "max_fps": max_fps, "gop": gop, "crf": crf}
    stamp = out_dir / "compress.json"
    if stamp.is_file() and json.loads(stamp.read_text()) != settings:
        raise ManifestError(f"{out_dir} holds videos compressed with {stamp.read_text().strip()}, not {settings}; "
                            f"resume with the same settings or choose another --out-dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stamp, json.dumps(settings))
    targets: dict[str, tuple[str, str]] = {}  # row.path -> (source file, new relative path)
    for r in rows:
        if r.path not in targets:
            targets[r.path] = (str(resolve_path(r.path, manifest, video_root)), _target(r.path))
    by_target: dict[str, str] = {}
    for path, (_, rel) in targets.items():
        if by_target.setdefault(rel, path) != path:
            raise ManifestError(f"{manifest}: videos {by_target[rel]!r} and {path!r} would both be written to "
                                f"{out_dir / rel}; rename one of them")
    jobs = [(src, str(out_dir / rel), short_side, max_fps, gop, crf) for src, rel in targets.values()]
    done_before = sum(Path(j[1]).is_file() for j in jobs)
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        errors = list(tqdm(pool.map(_job, jobs, chunksize=1), total=len(jobs), desc="compressing", unit="video",
                           disable=not progress))
    failed = {path for path, err in zip(targets, errors) if err}
    kept = [dataclasses.replace(r, path=targets[r.path][1]) for r in rows if r.path not in failed]
    new_manifest = write_manifest(out_dir / manifest.name, kept)
    lines = [f"{len(jobs)} videos: {len(jobs) - len(failed) - done_before} compressed, {done_before} already done, "
             f"{len(failed)} failed; {len(kept)} of {len(rows)} rows -> {new_manifest}"]
    lines += [f"  failed: {err}" for err in errors if err][:20]
    return "\n".join(lines)
