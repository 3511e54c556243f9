"""Training step per method: samples/s of forward + backward + optimizer step on a batch held in memory, ours
(attention through ``scaled_dot_product_attention``) against the same method with explicit-softmax attention
in fp32, in one run (part of ``make bench``).

- Every registered method (``vtp_bench.registry.METHODS``), built as training builds it (``lit.build_method``,
  ``Method.param_groups``, ``optim.configure``), on ``vtp_bench.testing.fake_batch``. ``--size tiny`` (CPU
  default): the ``experiments/tiny/<method>.yaml`` size the tests train at. ``--size paper`` (GPU default): the
  method's paper-size experiment (``PAPER`` below: ViT-B towers, 224 px, the paper's frames), random weights.
- The baseline is the same model and batch with every attention computed explicitly (``softmax(q k^T) v``,
  the attention matrix materialised): all attention in the code base goes through PyTorch's
  ``scaled_dot_product_attention`` (our towers, open_clip blocks, HuggingFace text encoders with
  ``attn_implementation="sdpa"``), so ``sdpa_kernel([SDPBackend.MATH])`` switches every one of them to PyTorch's
  math path, which is exactly that; the run checks it (no fused attention kernel is called under the switch).
  The baseline always runs in fp32, without ``torch.compile``.
- Two model copies with the same initial weights; on a CPU their steps alternate within every timed iteration, so
  a busy machine slows both alike; on a GPU they run one after the other (each alone in memory); the figure is
  the best iteration. FLOPs per step are counted once with
  ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions and attention, forward and backward) on
  the baseline's step, where attention is plain matmuls (the counter has no formula for the fused CPU kernel
  and would count its attention as 0), and the same count is used for both; TFLOP/s = FLOPs / step time;
  MFU = TFLOP/s / ``--peak-tflops`` (default from ``PEAK_TFLOPS`` by GPU name).
  Peak memory on a GPU: ``torch.cuda.max_memory_allocated`` over each configuration's timed steps (its weights,
  gradients, optimizer state and activations).

    python scripts/bench_train.py [--write docs/benchmarks.md]                          # CPU, tiny size
    python scripts/bench_train.py --device cuda --dtype bf16 [--compile] [--write ...]   # GPU, paper size
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdoc import default_threads, write_section  # noqa: E402
from vtp_bench import optim  # noqa: E402
from vtp_bench.config import load_config  # noqa: E402
from vtp_bench.lit import build_method  # noqa: E402
from vtp_bench.registry import METHODS  # noqa: E402
from vtp_bench.testing import fake_batch, tiny_config  # noqa: E402

# each method's paper-size experiment (its pre-training or main fine-tuning setting); weights random, no data read
PAPER = {
    "frozen": "frozen_synth_paper", "miles": "miles_webvid", "regionlearner": "regionlearner_webvid",
    "demovlp": "demovlp_webvid", "locvtp": "locvtp_webvid", "clip4clip": "clip4clip_msrvtt",
    "promptswitch": "promptswitch_msrvtt",
    "grounding_head": "locvtp_charades_grounding",  # the head's training setting (backbone: its checkpoint, or random)
}
# dense bf16 tensor-core peak (TFLOP/s, no sparsity) by a substring of torch.cuda.get_device_name
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0,
               "L40": 181.0, "A10G": 70.0, "A6000": 155.0, "4090": 165.0, "3090": 71.0, "V100": 125.0}
FUSED = ("flash", "efficient", "cudnn", "fused")  # fused SDPA kernels (aten op names)


class CountSDPA(TorchDispatchMode):
    """Counts the fused attention kernels a step calls (the math path decomposes into bmm / softmax)."""

    def __init__(self) -> None:
        super().__init__()
        self.fused: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if "scaled_dot_product" in name and any(k in name for k in FUSED):
            self.fused[name] += 1
        return func(*args, **(kwargs or {}))


def method_config(name: str, size: str, batch: int | None) -> Any:
    over = [f"data.batch_size={batch}"] if batch else []
    if size == "tiny":
        return tiny_config(name, *over)
    if name not in PAPER:
        raise SystemExit(f"no paper-size experiment known for method {name!r}: add it to PAPER in {__file__}")
    return load_config(PAPER[name], over)


class Trainer:
    """One model copy with its optimizer; ``step()`` = zero_grad, losses, backward, optimizer step, method hook."""

    def __init__(self, method: torch.nn.Module, cfg: Any, device: torch.device, dtype: str, explicit: bool,
                 compile_: bool) -> None:
        self.method, self.device, self.explicit = method, device, explicit
        self.dtype = "fp32" if explicit else dtype
        o = cfg.optim
        self.opt = optim.configure(method.param_groups(o.lr, o.weight_decay), o, 1000)["optimizer"]
        self.losses = torch.compile(method.losses) if compile_ and not explicit else method.losses
        self.n = 0

    def context(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        if self.explicit:
            stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == "bf16"))
        return stack

    def step(self, batch: dict[str, Any]) -> float:
        self.opt.zero_grad(set_to_none=True)
        with self.context():
            loss = torch.stack([v.float() for v in self.losses(batch).values()]).sum()
        loss.backward()
        self.opt.step()
        self.method.on_train_batch_end(self.n)
        self.n += 1
        return float(loss.detach())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def bench_method(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    cfg = method_config(name, args.size, args.batch)
    batch = to_device(fake_batch(cfg, int(cfg.data.batch_size), torch.float32), device)

    def make(explicit: bool) -> Trainer:  # the same initial weights for both
        torch.manual_seed(0)
        return Trainer(build_method(cfg).to(device).train(), cfg, device, args.dtype, explicit, args.compile)

    def first_step(tr: Trainer) -> tuple[float, int | None]:
        """The first step (also a warm-up): FLOPs on the baseline, the fused attention calls of each."""
        if tr.explicit or not args.compile:
            flops, kernels = FlopCounterMode(display=False), CountSDPA()
            with flops, kernels:
                tr.step(batch)
            return flops.get_total_flops(), sum(kernels.fused.values())
        tr.step(batch)  # compiles; not under a dispatch mode
        return 0.0, None

    def timed(tr: Trainer, best: dict[bool, float]) -> None:
        sync(device)
        t = time.perf_counter()
        tr.step(batch)
        sync(device)
        best[tr.explicit] = min(best[tr.explicit], time.perf_counter() - t)

    counts: dict[bool, tuple[float, int | None]] = {}
    best = {False: float("inf"), True: float("inf")}
    peak = {False: 0.0, True: 0.0}
    if device.type == "cuda":  # one configuration at a time, so that its peak memory is its own
        for explicit in (False, True):
            tr = make(explicit)
            counts[explicit] = first_step(tr)
            for _ in range(args.warmup):
                tr.step(batch)
            torch.cuda.reset_peak_memory_stats(device)
            for _ in range(args.iters):
                timed(tr, best)
            peak[explicit] = torch.cuda.max_memory_allocated(device) / 2**30
            params = sum(p.numel() for p in tr.method.parameters() if p.requires_grad)
            del tr
            torch.cuda.empty_cache()
    else:  # both alive, alternating within each iteration: a busy machine slows both alike
        ours, ref = make(False), make(True)
        params = sum(p.numel() for p in ours.method.parameters() if p.requires_grad)
        for tr in (ours, ref):
            counts[tr.explicit] = first_step(tr)
        for _ in range(args.warmup):
            ours.step(batch), ref.step(batch)
        for _ in range(args.iters):
            timed(ours, best), timed(ref, best)
    if counts[True][1]:
        raise RuntimeError(f"{name}: {counts[True][1]} fused attention calls under the explicit-softmax switch")
    n = int(cfg.data.batch_size)
    out = {"method": name, "experiment": cfg.name if args.size == "paper" else f"experiments/tiny/{name}.yaml",
           "batch": n, "frames": int(cfg.data.num_frames), "img_size": int(cfg.data.img_size),
           "trainable_params": params, "fused_attention_calls": counts[False][1]}
    flops = counts[True][0]  # the model's FLOPs, counted on the math path (see the module docstring)
    for key, explicit in (("ours", False), ("explicit", True)):
        out[key] = {"s": best[explicit], "samples_s": n / best[explicit], "gflop_step": flops / 1e9,
                    "tflops": flops / best[explicit] / 1e12, "peak_gib": peak[explicit]}
    out["speedup"] = best[True] / best[False]
    print(f"{name:14s} batch {n:3d}: ours {out['ours']['samples_s']:8.2f} samples/s, explicit fp32 "
          f"{out['explicit']['samples_s']:8.2f} samples/s ({out['speedup']:.2f}x), "
          f"{out['ours']['gflop_step']:.2f} GFLOP/step, fused attention calls {counts[False][1]}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="ours (the baseline is fp32)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the method's losses (ours only)")
    ap.add_argument("--size", choices=["tiny", "paper"], default=None, help="default: tiny on CPU, paper on GPU")
    ap.add_argument("--methods", nargs="*", default=None, help="default: every registered method")
    ap.add_argument("--batch", type=int, default=None, help="default: the config's data.batch_size")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--peak-tflops", type=float, default=None, help="the accelerator's dense bf16 peak")
    ap.add_argument("--write", default=None, help="replace this script's section of this markdown file")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    args.size = args.size or ("tiny" if device.type == "cpu" else "paper")
    if device.type == "cpu":
        torch.set_num_threads(default_threads())
        cpu = platform.processor() or platform.machine()
        name = f"{os.cpu_count()} CPU cores ({cpu}), {torch.get_num_threads()} thread(s)"
    else:
        name = torch.cuda.get_device_name(device)
    peak = args.peak_tflops
    if peak is None and device.type == "cuda":
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    methods = args.methods or [n for n in METHODS.names() if METHODS.get(n).__module__.startswith("vtp_bench.methods.")]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    rows, failed = [], {}
    for m in methods:  # one method failing (e.g. out of memory) does not lose the others' rows
        try:
            rows.append(bench_method(m, args, device))
        except Exception as e:  # noqa: BLE001 - reported in the table
            failed[m] = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            print(f"{m}: failed: {failed[m]}", file=sys.stderr, flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    total = time.perf_counter() - start

    gpu = device.type == "cuda"
    head = ["method", "size", "batch", "ours samples/s", "explicit fp32 samples/s", "ours / explicit",
            "GFLOP / step", "ours TFLOP/s"]
    if gpu:
        head += ["MFU", "ours peak GiB", "explicit peak GiB"]
    lines = [
        f"Machine: {name}, torch {torch.__version__}; ours {args.dtype}{' + torch.compile' if args.compile else ''}, "
        f"SDPA; baseline fp32, explicit softmax; {args.size} size; best of {args.iters} alternating iterations "
        f"after {args.warmup + 1} warm-up step(s); load average {load:.1f} at the start; {total:.0f} s in all."
        + (f" MFU against {peak:g} TFLOP/s (dense bf16 peak)." if gpu and peak else ""),
        "",
        "| " + " | ".join(head) + " |",
        "|---|---|" + "---:|" * (len(head) - 2),
    ]
    for r in rows:
        o, e = r["ours"], r["explicit"]
        cells = [r["method"], f"{r['frames']} x {r['img_size']} px", str(r["batch"]), f"{o['samples_s']:.2f}",
                 f"{e['samples_s']:.2f}", f"**{r['speedup']:.2f}x**", f"{o['gflop_step']:.2f}", f"{o['tflops']:.3f}"]
        if gpu:
            cells += [f"{100 * o['tflops'] / peak:.1f} %" if peak else "n/a", f"{o['peak_gib']:.2f}",
                      f"{e['peak_gib']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    calls = ", ".join(f"{r['method']} {r['fused_attention_calls'] if r['fused_attention_calls'] is not None else 'n/a'}"
                      for r in rows)
    lines += ["", f"Fused attention kernel calls per step (ours; 0 under the explicit switch, checked): {calls}."]
    if failed:
        lines += ["", "Failed here (the error each gave):", ""] + [f"- **{m}**: `{err}`" for m, err in failed.items()]
    table = "\n".join(lines)
    print(table)
    if args.write:
        key = f"train-{device.type}"
        write_section(args.write, key, f"Training step per method (`make bench`, {device.type.upper()})", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
