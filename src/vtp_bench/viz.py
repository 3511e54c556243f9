"""``vtp-bench viz regions``: draw a video's frames with the learned region masks of a checkpoint on top.

RegionLearner's masks are raw 3x3-conv outputs on the patch grid (no softmax: any sign, any scale), so each is
drawn on a diverging colour scale centred at 0 and shared by the frames of one region (red > 0 > blue); the
patch grid is kept (nearest), not smoothed. Per frame the figure also shows which region's mask, divided by
that region's largest |value|, is largest at each patch, and the codebook index of each patch (Quantization:
the most frequent codes each get a colour, named in the legend under that column; the rest share one grey).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

from vtp_bench.errors import ConfigError


def region_maps(module: Any, video_path: str | Path, num_frames: int | None = None) -> dict[str, Any]:
    """Frames as shown [T, H, W, 3] in [0, 1], code indices [T, h, w] and masks [T, S, h, w] (numpy), for a
    VTPModule whose method has ``video_regions`` (eval mode, the config's eval frame sampling and size)."""
    import torch

    from vtp_bench.data.dataset import DecodeOptions, decode_clip
    from vtp_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, VideoTransform

    method = module.method
    if not hasattr(method, "video_regions"):
        raise ConfigError(f"viz regions needs a method with learned region masks (regionlearner); this checkpoint's "
                          f"method is {module.cfg.method.name!r}")
    d = module.cfg.data
    n = num_frames or d.num_frames
    decoded = decode_clip(Path(video_path), n, d.eval_sampling, VideoTransform(d.img_size, train=False),
                          random.Random(0), decode=DecodeOptions(d.decode_size))
    clip, mask = decoded.video, decoded.mask
    keep = int(mask.sum())
    module.eval()
    with torch.no_grad():
        out = method.video_regions({"video": clip[None], "video_mask": mask[None]})
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    shown = (clip[:keep] * std + mean).clamp(0, 1).permute(0, 2, 3, 1)
    return {"frames": shown.numpy(), "codes": out.codes[0, :keep].numpy(), "masks": out.masks[0, :keep].float().numpy()}


def _code_colours(codes: Any) -> tuple[Any, Any, list[Any]]:
    """(colour index per patch, colour map, legend handles): the most frequent codebook entries get a colour of
    their own (named in the legend), all others one grey, so that no two codes shown share a colour unnamed."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    palette = [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i not in (14, 15)]  # tab20 less its greys
    values, counts = np.unique(codes, return_counts=True)
    named = values[np.argsort(-counts, kind="stable")][: len(palette)]
    index = np.full(codes.shape, len(named))
    for i, code in enumerate(named):
        index[codes == code] = i
    colours = palette[: len(named)] + [(0.75, 0.75, 0.75)]
    handles = [Patch(color=colours[i], label=f"code {int(c)}") for i, c in enumerate(named)]
    if len(values) > len(named):
        handles.append(Patch(color=colours[-1], label=f"{len(values) - len(named)} other codes"))
    return index, ListedColormap(colours), handles


def draw_regions(maps: dict[str, Any], out: str | Path, title: str = "") -> Path:
    """One row per frame: frame | dominant region | codes | one column per region mask."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    frames, codes, masks = maps["frames"], maps["codes"], maps["masks"]
    t, s = masks.shape[:2]
    size_h, size_w = frames.shape[1:3]
    extent = (0, size_w, size_h, 0)
    cols = 3 + s
    fig, axes = plt.subplots(t, cols, figsize=(1.7 * cols, 1.8 * t + 0.6), squeeze=False)
    region_colours = plt.get_cmap("tab10" if s <= 10 else "tab20")
    scale = np.abs(masks).max(axis=(0, 2, 3))  # [S]: one scale per region, shared by its frames
    scale[scale == 0] = 1.0
    largest = (masks / scale[None, :, None, None]).argmax(axis=1)  # raw scales differ by region: compare scaled
    code_colour, code_cmap, code_handles = _code_colours(codes)
    for r in range(t):
        row = axes[r]
        row[0].imshow(frames[r])
        row[0].set_ylabel(f"frame {r}", fontsize=8)
        row[1].imshow(frames[r])
        row[1].imshow(largest[r], cmap=region_colours, vmin=0, vmax=region_colours.N - 1, alpha=0.55,
                      extent=extent, interpolation="nearest")
        row[2].imshow(frames[r])
        row[2].imshow(code_colour[r], cmap=code_cmap, vmin=0, vmax=code_cmap.N - 1, alpha=0.55, extent=extent,
                      interpolation="nearest")
        for j in range(s):
            lim = float(scale[j])
            ax = row[3 + j]
            ax.imshow(frames[r])
            ax.imshow(masks[r, j], cmap="RdBu_r", vmin=-lim, vmax=lim, alpha=0.6, extent=extent,
                      interpolation="nearest")
            if r == 0:
                ax.set_title(f"region {j}\n|max| {lim:.2g}", fontsize=8, color=region_colours(j))
        if r == 0:
            for ax, name in zip(row[:3], ("frame", "largest mask / |max|", "code index")):
                ax.set_title(name, fontsize=8)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[-1][2].legend(handles=code_handles, loc="upper center", bbox_to_anchor=(0.5, -0.04), ncol=2, fontsize=6,
                       title="code index (most frequent)", title_fontsize=6, frameon=False, handlelength=1)
    fig.suptitle(title + "\nraw region masks (3x3 conv, no softmax): red > 0 > blue", fontsize=9)
    fig.tight_layout()  # counts the legend under the code column
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from vtp_bench.atomic import atomic_path

    with atomic_path(out) as tmp:  # the temporary name ends in .tmp: say the format
        fig.savefig(tmp, dpi=110, format=out.suffix.lstrip(".").lower() or "png")
    plt.close(fig)
    return out


def render_regions(ckpt: str | Path, video: str | Path, out: str | Path, frames: int | None = None,
                   overrides: list[str] = (), trust: bool = False, method: str | None = None,
                   experiment: str | None = None) -> Path:
    """Checkpoint (vtp_bench's, or a released one with ``method``/``experiment``) + video file -> PNG."""
    from vtp_bench.evaluate import module_from_checkpoint

    if not Path(video).is_file():
        raise ConfigError(f"--video {video}: no such file")
    module = module_from_checkpoint(ckpt, list(overrides), trust, None, method, experiment)
    maps = region_maps(module, video, frames)
    return draw_regions(maps, out, title=f"{Path(video).name}  ({module.cfg.method.name}, {Path(ckpt).name})")


def cmd_regions(args: argparse.Namespace) -> None:
    path = render_regions(args.ckpt, args.video, args.out, args.frames, args.overrides, args.trust_checkpoint,
                          args.method, args.experiment)
    print(f"region masks written to {path}")


def add_viz_parser(sub: Any) -> None:
    p = sub.add_parser("viz", help="draw what a model learned: viz regions --ckpt CKPT --video MP4 --out PNG")
    vs = p.add_subparsers(dest="viz_command", required=True)
    s = vs.add_parser("regions", help="a video's frames with RegionLearner's region masks and codes overlaid")
    s.add_argument("--ckpt", required=True, help="a vtp_bench checkpoint (or a released one with --method)")
    s.add_argument("--video", required=True, help="a video file")
    s.add_argument("--out", required=True, help="the PNG to write")
    s.add_argument("--frames", type=int, default=None, help="frames to sample (default: the config's num_frames)")
    s.add_argument("--trust-checkpoint", action="store_true", help="allow arbitrary unpickling (trusted files only)")
    s.add_argument("--method", default=None, help="for a released checkpoint: build this method at its defaults")
    s.add_argument("--experiment", default=None, help="for a released checkpoint: build this experiment's model")
    s.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                   help="config overrides, e.g. data.img_size=224")
    s.set_defaults(func=cmd_regions)
