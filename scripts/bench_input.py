"""`make bench` (input pipeline): training clips/s read from individual mp4 files vs from WebDataset shards of the
same videos, with 0, 1, 2 (on a bigger host: more) DataLoader workers, next to frozen_synth's model step rate, all
in one run. Then where a clip's time goes (reading the bytes vs decoding them), which says what limits the
shards' gain.

Both pipelines are the training ones: files = ``VideoTextDataset`` + ``MixedBatchSampler`` (data.format=files);
shards = ``ShardTrainSet`` (data.format=webdataset, written by ``vtp-bench data shard``); same rows, same
frames (4, rand), same transform (frozen_synth: 64 px), batch 32. Clock: from the first batch to the last
(worker start-up excluded), best of ``--repeats`` passes.

    python scripts/bench_input.py [--write docs/benchmarks.md] [--manifest data/synth/train.jsonl]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tarfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdoc import write_section  # noqa: E402
from vtp_bench.config import load_config
from vtp_bench.data.dataset import MixedDataset, VideoTextDataset, collate, decode_clip
from vtp_bench.data.inputs import ItemInputs
from vtp_bench.data.manifest import read_manifest, resolve_path, write_manifest
from vtp_bench.data.samplers import MixedBatchSampler
from vtp_bench.data.shard_write import write_shards
from vtp_bench.data.shards import ShardLoader, ShardPart, ShardTrainSet, load_shard_set
from vtp_bench.data.transforms import VideoTransform
from vtp_bench.data.video import VideoBytes

CACHE = Path(os.environ.get("VTP_BENCH_CACHE", "/tmp/vtp_bench_input"))


def prepare(manifest: Path, clips: int, shard_size: int) -> tuple[Path, Path]:
    """The first ``clips`` rows (absolute paths) as a manifest, and their shards."""
    rows = read_manifest(manifest)[:clips]
    rows = [r.__class__(**{**r.to_dict(), "path": str(resolve_path(r.path, manifest)), "boxes": None}) for r in rows]
    out = CACHE / "train.jsonl"
    write_manifest(out, rows)
    write_shards(out, CACHE / "shards", shard_size=shard_size)
    return out, CACHE / "shards"


def timed(loader: DataLoader) -> tuple[float, int]:
    """Clips/s from the first batch to the last, and the number of clips."""
    it = iter(loader)
    first = next(it)
    t0, n = time.perf_counter(), 0
    for b in it:
        n += b["size"]
    dt = time.perf_counter() - t0
    del it
    return n / dt, n + first["size"]


def files_loader(manifest: Path, cfg, workers: int) -> DataLoader:
    d = cfg.data
    ds = VideoTextDataset(manifest, d.num_frames, VideoTransform(d.img_size, train=True, crop_scale=tuple(d.crop_scale),
                                                                  hflip=d.hflip), d.train_sampling, seed=cfg.seed)
    sampler = MixedBatchSampler([len(ds)], d.batch_size, seed=cfg.seed)
    return DataLoader(MixedDataset([ds]), batch_sampler=sampler, num_workers=workers, collate_fn=collate)


def shard_loader(folder: Path, cfg, workers: int) -> DataLoader:
    d = cfg.data
    part = ShardPart(load_shard_set("synth", folder), d.num_frames,
                     VideoTransform(d.img_size, train=True, crop_scale=tuple(d.crop_scale), hflip=d.hflip),
                     d.train_sampling, cfg.seed, None, ItemInputs())
    ds = ShardTrainSet([part], d.batch_size, seed=cfg.seed, shuffle_buffer=d.shuffle_buffer).configure(0, 1, workers)
    return ShardLoader(ds, workers)


def read_costs(manifest: Path, folder: Path, cfg) -> dict[str, float]:
    """Milliseconds per clip: reading the bytes (files: open + read each; shards: walk the tars), and decoding +
    transforming from memory (the same work in both pipelines)."""
    rows = read_manifest(manifest)
    t = time.perf_counter()
    blobs = [resolve_path(r.path, manifest).read_bytes() for r in rows]
    files_read = (time.perf_counter() - t) / len(rows)
    t = time.perf_counter()
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard, "r:") as tf:
            for m in tf:
                f = tf.extractfile(m)
                if f is not None:
                    f.read()
    shards_read = (time.perf_counter() - t) / len(rows)
    d = cfg.data
    tr = VideoTransform(d.img_size, train=True, crop_scale=tuple(d.crop_scale), hflip=d.hflip)
    t = time.perf_counter()
    for i, b in enumerate(blobs):
        decode_clip(VideoBytes(b, str(i)), d.num_frames, d.train_sampling, tr, random.Random(i))
    decode_mem = (time.perf_counter() - t) / len(rows)
    t = time.perf_counter()
    for i, r in enumerate(rows):
        decode_clip(resolve_path(r.path, manifest), d.num_frames, d.train_sampling, tr, random.Random(i))
    decode_file = (time.perf_counter() - t) / len(rows)
    mb = sum(len(b) for b in blobs) / len(rows) / 1e6
    return {"files_read": files_read * 1e3, "shards_read": shards_read * 1e3, "decode_mem": decode_mem * 1e3,
            "decode_file": decode_file * 1e3, "mb_per_clip": mb}


def model_rate(cfg, steps: int, device: str) -> tuple[float, float]:
    """frozen_synth's training step (forward, backward, AdamW) on one batch at the data's size: steps/s, clips/s."""
    from vtp_bench.lit import build_method

    method = build_method(cfg).to(device)
    method.train()
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-4)
    d = cfg.data
    g = torch.Generator().manual_seed(0)
    texts = [r.text for r in read_manifest(Path(cfg.data.root) / "synth" / "train.jsonl")[: d.batch_size]]
    batch = {"video": torch.randn(d.batch_size, d.num_frames, 3, d.img_size, d.img_size, generator=g).to(device),
             "video_mask": torch.ones(d.batch_size, d.num_frames, dtype=torch.bool, device=device), "text": texts,
             "size": d.batch_size}
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        loss = torch.stack(list(method.losses(batch).values())).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    step = min(times[1:])
    return 1 / step, d.batch_size / step


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", default="data/synth/train.jsonl",
                    help="the training manifest whose videos are read (make bench generates data/synth)")
    ap.add_argument("--clips", type=int, default=640)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="+", default=None, help="default: 0 1 2 (and 8 16 on >= 16 cores)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="where the model step runs (cuda on a GPU host)")
    ap.add_argument("--model-steps", type=int, default=4)
    ap.add_argument("--write", default=None, help="replace this script's section of the markdown file")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    workers = args.workers or ([0, 1, 2] + ([8, 16] if cores >= 16 else []))
    manifest = Path(args.manifest)
    cfg = load_config("frozen_synth", [f"data.root={manifest.parent.parent}", "trainer.accelerator=cpu"])
    torch.set_num_threads(1)  # the DataLoader comparison: one decoder thread per process, as in training
    load = os.getloadavg()
    small, folder = prepare(manifest, args.clips, args.shard_size)
    timed(files_loader(small, cfg, 0)), timed(shard_loader(folder, cfg, 0))  # warm-up: imports, page cache
    rows = []
    for w in workers:
        f = s = 0.0
        for _ in range(args.repeats):  # interleaved, so a load spike from elsewhere hits both
            f = max(f, timed(files_loader(small, cfg, w))[0])
            s = max(s, timed(shard_loader(folder, cfg, w))[0])
        rows.append((w, f, s))
        print(f"workers {w}: files {f:.1f} clips/s, shards {s:.1f} clips/s ({s / f:.2f}x)", flush=True)
    costs = read_costs(small, folder, cfg)
    print(costs, flush=True)
    torch.set_num_threads(cores)
    steps_s, clips_s = model_rate(cfg, args.model_steps, args.device)
    print(f"model: {steps_s:.2f} steps/s = {clips_s:.1f} clips/s", flush=True)

    d = cfg.data
    per_clip = costs["files_read"] + costs["decode_file"]
    bound = per_clip / max(costs["decode_mem"] + costs["shards_read"], 1e-9)
    best = max(rows, key=lambda r: r[2])
    lines = [
        f"Machine: {cores} CPU cores ({platform.machine()}), Python {platform.python_version()}, torch "
        f"{torch.__version__}; {args.clips} clips of `{manifest}` ({costs['mb_per_clip'] * 1e3:.0f} kB each on "
        f"average, local disk, in the page cache), shards of {args.shard_size}; frozen_synth's data settings "
        f"({d.num_frames} frames `{d.train_sampling}`, {d.img_size} px, batch {d.batch_size}); clips/s from the first "
        f"batch to the last, best of {args.repeats} interleaved passes. Load average during the run: "
        f"{load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (other jobs shared the cores).",
        "",
        "| DataLoader workers | files (clips/s) | shards (clips/s) | shards / files |",
        "|---:|---:|---:|---:|",
        *[f"| {w} | {f:.1f} | {s:.1f} | {s / f:.2f}x |" for w, f, s in rows],
        "",
        f"Model: frozen_synth's training step (tiny space-time ViT, MiniLM, batch {d.batch_size}, {args.device}, "
        f"{cores} threads) "
        f"runs {steps_s:.2f} steps/s = **{clips_s:.0f} clips/s**.",
        "",
        "Where one clip's time goes (one process, ms per clip):",
        "",
        "| reading the bytes: files | reading the bytes: shards | decode + transform from memory | "
        "decode + transform from the file |",
        "|---:|---:|---:|---:|",
        f"| {costs['files_read']:.3f} | {costs['shards_read']:.3f} | {costs['decode_mem']:.2f} | "
        f"{costs['decode_file']:.2f} |",
        "",
        f"Reading the bytes is {100 * costs['files_read'] / per_clip:.1f} % of a clip's time from files here "
        f"(local disk, page cache: an open + read costs {1e3 * costs['files_read']:.0f} µs), so shards can save at "
        f"most that share: the bound on shards / files is {bound:.2f}x, and decoding is the rest. "
        f"The data pipeline with {best[0]} worker(s) delivers {best[2]:.0f} clips/s from shards, "
        f"{best[2] / clips_s:.0f}x what the model consumes ({clips_s:.0f} clips/s): the step is model-bound here.",
    ]
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section(args.write, "input", "Input pipeline: files vs shards (`make bench`)", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
