"""Forward + backward time of the video tower (Frozen's space-time ViT), ours against a straightforward
reference, in one run: ``make bench`` (CPU fp32) or ``--device cuda --dtype bf16`` on a GPU.

The reference is written for this benchmark the way the official code computes a block: explicit
``softmax(q @ k^T * scale) @ v`` attention, the groups formed by reshapes and the CLS key/value repeated into
every group. Both models hold the same weights; their outputs and gradients are compared before timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
from torch import Tensor, nn

from vtp_bench.models.video.space_time_vit import SpaceTimeViT


# ---------------------------------------------------------------------------------------------- reference
def explicit_var_attention(x: Tensor, qkv: nn.Linear, proj: nn.Linear, heads: int, frames: int, mode: str) -> Tensor:
    b, n, d = x.shape
    c = d // heads
    p = (n - 1) // frames
    q, k, v = qkv(x).reshape(b, n, 3, heads, c).permute(2, 0, 3, 1, 4)  # [B, H, N, c]
    q = q * c**-0.5

    def attend(q_: Tensor, k_: Tensor, v_: Tensor) -> Tensor:
        return (q_ @ k_.transpose(-2, -1)).softmax(dim=-1) @ v_

    cls_out = attend(q[:, :, :1], k, v)  # the CLS query attends to every token
    q_, k_, v_ = (t[:, :, 1:].reshape(b, heads, frames, p, c) for t in (q, k, v))
    if mode == "time":  # group by spatial position: [B, H, P, F, c]
        q_, k_, v_ = (t.transpose(2, 3) for t in (q_, k_, v_))
    g = q_.shape[2]
    k_cls = k[:, :, :1, None].expand(b, heads, g, 1, c)
    v_cls = v[:, :, :1, None].expand(b, heads, g, 1, c)
    out = attend(q_, torch.cat([k_cls, k_], dim=3), torch.cat([v_cls, v_], dim=3))
    if mode == "time":
        out = out.transpose(2, 3)
    out = torch.cat([cls_out, out.reshape(b, heads, frames * p, c)], dim=2)
    return proj(out.transpose(1, 2).reshape(b, n, d))


def reference_forward(model: SpaceTimeViT, video: Tensor) -> Tensor:
    """The official SpaceTimeTransformer forward on ``model``'s modules, attention computed explicitly."""
    frames = video.shape[1]
    x = model.embed(video)
    for blk in model.blocks:
        heads = blk.attn.num_heads
        t = explicit_var_attention(blk.norm3(x), blk.timeattn.qkv, blk.timeattn.proj, heads, frames, "time")
        s = explicit_var_attention(blk.norm1(x + t), blk.attn.qkv, blk.attn.proj, heads, frames, "space")
        x = x + s
        x = x + blk.mlp(blk.norm2(x))
    return model.norm(x)


# ---------------------------------------------------------------------------------------------- measuring
def forward_flops(model: SpaceTimeViT, batch: int, frames: int) -> float:
    """Multiply-adds x 2 of one forward pass (matmuls only: linear layers, attention, patch embedding)."""
    d, p = model.embed_dim, model.patches_per_frame
    n = 1 + frames * p
    patch = model.patch_embed.patch_size
    hidden = model.blocks[0].mlp.fc1.out_features
    linear = 2 * (n * d * 3 * d + n * d * d) + n * d * hidden * 2  # two attentions (qkv + proj), MLP
    space = frames * p * (p + 1) + n  # query-key pairs: patches within their frame (+CLS), CLS with all
    time_ = p * frames * (frames + 1) + n
    attention = 2 * d * (space + time_)  # q @ k^T and probs @ v
    embed = frames * p * 3 * patch * patch * d
    return 2.0 * batch * (len(model.blocks) * (linear + attention) + embed)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(fns: dict, params, video, device, dtype, warmup, iters) -> dict[str, float]:
    """Best forward+backward time of each function; the functions alternate within every iteration, so that
    a busy machine slows them alike."""

    def step(fn) -> None:
        for p_ in params:
            p_.grad = None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            out = fn(video)
        out.float().square().mean().backward()

    for fn in fns.values():
        for _ in range(warmup):
            step(fn)
    sync(device)
    best = {name: float("inf") for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            start = time.perf_counter()
            step(fn)
            sync(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--preset", default="base", help="space_time_vit preset (base = ViT-B/16, 224 px)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = SpaceTimeViT.preset(args.preset, num_frames=args.frames).to(device).train()
    params = list(model.parameters())
    size = model.patch_embed.img_size
    video = torch.randn(args.batch, args.frames, 3, size, size, device=device)

    # same weights, same input: outputs and gradients compared once, in fp32
    def grads(fn):
        for p_ in params:
            p_.grad = None
        out = fn(video)
        out.square().mean().backward()
        return out.detach(), torch.cat([p_.grad.flatten() for p_ in params])

    small = video[:1]
    with torch.random.fork_rng():
        ours_out, ours_grad = grads(lambda v: model(small).tokens)
        ref_out, ref_grad = grads(lambda v: reference_forward(model, small))
    out_diff = (ours_out - ref_out).abs().max().item()
    grad_diff = ((ours_grad - ref_grad).norm() / ref_grad.norm()).item()

    best = time_steps({"reference": lambda v: reference_forward(model, v), "ours": lambda v: model(v).tokens},
                      params, video, device, args.dtype, args.warmup, args.iters)
    t_ref, t_ours = best["reference"], best["ours"]
    flops = 3 * forward_flops(model, args.batch, args.frames)  # forward + backward ~ 3 x forward
    result = {
        "encoder": "space_time_vit", "preset": args.preset, "frames": args.frames, "batch": args.batch,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(), "dtype": args.dtype, "warmup": args.warmup, "iters": args.iters,
        "reference_s": t_ref, "ours_s": t_ours, "speedup": t_ref / t_ours,
        "tflops_ours": flops / t_ours / 1e12, "tflops_reference": flops / t_ref / 1e12,
        "max_abs_out_diff": out_diff, "rel_grad_diff": grad_diff,
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
    }
    print(f"space_time_vit {args.preset}, {args.frames} frames, batch {args.batch}, {result['device']} "
          f"({result['threads']} threads), {args.dtype}; forward+backward, best of {args.iters} (alternating) "
          f"after {args.warmup} warm-up")
    print("| implementation | fwd+bwd s/iter | TFLOP/s | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| reference (explicit softmax attention) | {t_ref:.2f} | {result['tflops_reference']:.3f} | 1.00 |")
    print(f"| ours (SDPA) | {t_ours:.2f} | {result['tflops_ours']:.3f} | {t_ref / t_ours:.2f} |")
    print(f"outputs: max |ours - reference| = {out_diff:.2e}; gradients: relative difference {grad_diff:.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
