"""Encoding a test set: videos/s of ``vtp-bench eval`` end to end (``vtp_bench.evaluate.evaluate``: checkpoint
-> DataLoader -> video tower -> texts -> metrics -> JSON) on the synthetic test split, with decoding and model
time measured apart in the same run (part of ``make bench``).

- Checkpoint: ``frozen_synth`` (or ``--experiment``) at random init, written the way training writes one.
- *Decoding*: the evaluation DataLoader alone (the same dataset, transforms, workers and batches), iterated to
  the end. *Video model*: ``Method.encode_video`` on those same batches held in memory. *End to end*: the whole
  ``evaluate`` call, where the DataLoader's workers decode while the main process runs the model.
- *Several tasks*: ``make demo``'s four tasks (retrieval, zero-shot classification, multiple choice, grounding) of
  one checkpoint, one ``evaluate`` per task (the demo before ``evaluate_tasks``) against one ``evaluate_tasks``
  call (each shared clip decoded and encoded once), with the metrics checked equal.

    python scripts/bench_eval.py [--data-root /work/data] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdoc import default_threads, write_section  # noqa: E402
from vtp_bench.config import load_config, to_dict  # noqa: E402
from vtp_bench.data.datamodule import VideoTextDataModule  # noqa: E402
from vtp_bench.evaluate import evaluate, evaluate_tasks  # noqa: E402
from vtp_bench.lit import VTPModule  # noqa: E402


@contextlib.contextmanager
def timed_hooks():
    """Record (start, end) of VTPModule's test hooks while the block runs: the video model per batch
    (``test_step``), the start of the loop, and the epoch end (text tower + metrics)."""
    marks: dict[str, list[tuple[float, float]]] = {}
    originals = {}
    for name in ("on_test_epoch_start", "test_step", "on_test_epoch_end"):
        originals[name] = fn = getattr(VTPModule, name)

        def wrapper(self, *a, _fn=fn, _name=name, **k):
            t0 = time.perf_counter()
            try:
                return _fn(self, *a, **k)
            finally:
                marks.setdefault(_name, []).append((t0, time.perf_counter()))

        setattr(VTPModule, name, wrapper)
    try:
        yield marks
    finally:
        for name, fn in originals.items():
            setattr(VTPModule, name, fn)


def data_root(given: str | None, videos: int) -> Path:
    """The given root, else ``data`` (what ``make demo`` writes) when it holds synth, else a fresh small set."""
    if given:
        return Path(given)
    if (Path("data") / "synth" / "test.jsonl").is_file():
        return Path("data")
    root = Path(tempfile.mkdtemp(prefix="vtp_bench_eval_"))
    vtp = Path(sys.executable).parent / "vtp-bench"
    cmd = [str(vtp) if vtp.exists() else "vtp-bench", "data", "synth", "--out", str(root / "synth"),
           "--videos", str(videos), "--seed", "0"]
    subprocess.run(cmd, check=True)
    return root


DEMO_TASKS = ["retrieval", "zeroshot_cls", "multiple_choice", "grounding"]


def several_tasks(ckpt: Path, root: Path) -> list[str]:
    """``make demo``'s tasks of one checkpoint: one evaluation per task, then all at once (same metrics)."""
    from vtp_bench.cli import main as cli

    mc = root / "synth" / "mc_test.jsonl"
    if not mc.is_file():
        cli(["data", "convert", "mc_from_captions", str(root / "synth" / "test.jsonl"), "--out", str(mc)])
    over = [f"data.root={root}"]
    t = time.perf_counter()
    alone = [evaluate(ckpt, "synth", task=task, accelerator="cpu", overrides=over) for task in DEMO_TASKS]
    t_alone = time.perf_counter() - t
    t = time.perf_counter()
    together = evaluate_tasks(ckpt, "synth", DEMO_TASKS, accelerator="cpu", overrides=over)
    t_together = time.perf_counter() - t
    same = all(a["metrics"] == b["metrics"] for a, b in zip(alone, together))
    clips = {r["task"]: r.get("num_clips", r.get("num_videos")) for r in alone}
    return [
        f"`make demo`'s four tasks of this checkpoint ({', '.join(f'{k}: {v} clips' for k, v in clips.items())}; "
        "retrieval, zero-shot classification and multiple choice read the same test videos):",
        "",
        "| evaluation | time (s) |",
        "|---|---:|",
        f"| one `evaluate` per task (the demo before `evaluate_tasks`) | {t_alone:.2f} |",
        f"| **one `evaluate_tasks`** (`vtp-bench eval --task {','.join(DEMO_TASKS)}`) | **{t_together:.2f}** |",
        "",
        f"{t_alone / t_together:.2f}x; metrics {'identical' if same else 'DIFFERENT'} task by task.",
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="frozen_synth")
    ap.add_argument("--data-root", default=None, help="holds synth/ (default: ./data, else a generated set)")
    ap.add_argument("--videos", type=int, default=1000, help="size of the generated synthetic set, if one is made")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the experiment's)")
    ap.add_argument("--write", default=None)
    args = ap.parse_args()
    torch.set_num_threads(default_threads())
    root = data_root(args.data_root, args.videos)
    over = [f"data.root={root}", "trainer.accelerator=cpu"]
    if args.workers is not None:
        over.append(f"data.num_workers={args.workers}")
    cfg = load_config(args.experiment, over)
    torch.manual_seed(0)
    module = VTPModule(to_dict(cfg))
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "random.ckpt"
        torch.save({"hyper_parameters": {"config": to_dict(cfg)}, "state_dict": module.state_dict()}, ckpt)

        # decoding alone: the evaluation DataLoader, iterated to the end
        dm = VideoTextDataModule(cfg, eval_dataset="synth", eval_split="test", task="retrieval")
        dm.setup("test")
        t = time.perf_counter()
        batches = list(dm.test_dataloader())
        t_decode = time.perf_counter() - t
        n_videos = sum(int(b["size"]) for b in batches)

        # the video tower alone, on those batches in memory
        method = module.method.eval()
        with torch.no_grad():
            method.encode_video(batches[0])  # warm-up
            t = time.perf_counter()
            for b in batches:
                method.encode_video(b)
            t_model = time.perf_counter() - t

        # end to end: vtp-bench eval's function, its hooks timed from outside (the code itself is unchanged)
        t = time.perf_counter()
        with timed_hooks() as marks:
            result = evaluate(ckpt, "synth", split="test", accelerator="cpu", overrides=[f"data.root={root}"])
        t_all = time.perf_counter() - t
        tasks_lines = several_tasks(ckpt, root)
    setup = marks["on_test_epoch_start"][0][0] - t
    steps = marks["test_step"]
    in_model = sum(b - a for a, b in steps)
    loop = steps[-1][1] - marks["on_test_epoch_start"][0][1]
    end_a, end_b = marks["on_test_epoch_end"][0]
    rest = t_all - setup - loop - (end_b - end_a)
    n_texts = int(result.get("num_texts", result["metrics"].get("t2v/num_queries", 0)))
    d = cfg.data
    lines = [
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average {load:.1f} at the start (shared machine). "
        f"`{args.experiment}` at random init (space-time ViT, {d.eval_num_frames or d.num_frames} frames at "
        f"{d.img_size} px, eval batch {d.eval_batch_size}, {d.num_workers} DataLoader workers), the synthetic test "
        f"split: {n_videos} videos, {n_texts} captions, from `{root}`.",
        "",
        "| stage | time (s) | videos/s |",
        "|---|---:|---:|",
        f"| decoding: the evaluation DataLoader alone ({d.num_workers} workers) | {t_decode:.2f} | "
        f"{n_videos / t_decode:.1f} |",
        f"| video model: `encode_video` on the same batches in memory | {t_model:.2f} | {n_videos / t_model:.1f} |",
        f"| **end to end**: `evaluate` (`vtp-bench eval`: checkpoint load, decoding and model overlapped, texts, "
        f"metrics, JSON) | {t_all:.2f} | **{n_videos / t_all:.1f}** |",
        "",
        f"Inside the end-to-end run ({t_all:.2f} s): loading the checkpoint, building the model, data and Trainer "
        f"{setup:.2f} s; the test loop {loop:.2f} s, of which the video model {in_model:.2f} s and waiting for "
        f"decoded batches {loop - in_model:.2f} s (the first batch includes the workers' start-up); texts + "
        f"metrics at epoch end {end_b - end_a:.2f} s; the rest (results JSON, teardown) {rest:.2f} s.",
        "",
        *tasks_lines,
    ]
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section(args.write, "eval", "Encoding a test set (`make bench`)", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
