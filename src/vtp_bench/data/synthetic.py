"""A procedural video-text dataset that needs no download: coloured shapes moving on a textured background,
written as real H.264 mp4 files with compositional captions, per-frame object boxes, a motion class per clip
and a temporal-grounding split of longer videos with sequential events.

Everything is drawn from ``numpy.random.default_rng([seed, stream, index])``: the same seed gives
byte-identical manifests and identical decoded frames. Layout of ``out_dir`` (see data_manifests/README.md)::

    train.jsonl val.jsonl test.jsonl   one row per clip (one caption each), source "synthetic"
    grounding.jsonl                    one row per event query of the longer videos (start/end seconds)
    grounding_{train,val,test}.jsonl   the same queries split by video (``grounding_split``: video g is test when
                                       g % 5 == 4, val when g % 5 == 3, else train), for a trained grounding head
    classes.json                       the 9 motion classes and a prompt template (zero-shot classification)
    meta.json                          seed, counts, generator version, parameters
    videos/synth_00000.mp4 ...         the clips
    videos_grounding/synthg_0000.mp4   the grounding videos
    boxes/<video_id>.npz               boxes [T, N, 4] float32 normalised x1 y1 x2 y2 (zeros where invisible),
                                       visible [T, N] bool, labels [N] str ("small red circle"), and
                                       colors / shapes / sizes / motions [N] str

Captions describe every object ("a small red circle moves left while a large blue square grows"); the
set of (size, colour, shape, motion) of a clip is unique over the whole dataset, so no two clips -- in the
same split or across splits -- share a caption or a scene description.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vtp_bench.atomic import atomic_write_text
from vtp_bench.data.manifest import ManifestRow, write_manifest
from vtp_bench.data.video_write import write_video

GENERATOR = "vtp_bench.data.synthetic"
GENERATOR_VERSION = 1

# six saturated colours, hues 60 degrees apart, far from the low-saturation background
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (235, 30, 30),
    "yellow": (245, 225, 25),
    "green": (30, 205, 45),
    "cyan": (25, 215, 235),
    "blue": (35, 65, 240),
    "magenta": (230, 35, 220),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
MOTIONS = ("left", "right", "up", "down", "grow", "shrink", "still", "appear", "disappear")
SIZES = {"small": 14 / 96, "large": 26 / 96}  # side of the shape's box, as a fraction of the frame side
GROW, SHRINK = 2.0, 0.45  # size factor reached at the end of a grow / shrink
MOVE_RANGE = (0.40, 0.55)  # travel of a move over the clip, fraction of the frame
GROUNDING_SECONDS = (8.0, 12.0)
GROUNDING_EVENTS = (2, 4)

PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("moves left", "moves to the left", "slides to the left"),
    "right": ("moves right", "moves to the right", "slides to the right"),
    "up": ("moves up", "moves upward", "rises"),
    "down": ("moves down", "moves downward", "sinks"),
    "grow": ("grows", "gets bigger", "expands"),
    "shrink": ("shrinks", "gets smaller", "contracts"),
    "still": ("stays still", "does not move", "stays in place"),
    "appear": ("appears", "shows up", "pops into view"),
    "disappear": ("disappears", "vanishes", "goes out of view"),
}
JOIN2 = ("{0} while {1}", "{0} and {1}", "{0}, while {1}", "{0} as {1}")
JOIN3 = ("{0}, {1}, and {2}", "{0} while {1} and {2}", "{0}, {1} and {2}")
CLASS_TEMPLATE = "an object {}"

# encoder settings: small files, 1-second GOP (cheap seeking), single-threaded x264 (parallelism belongs to
# the caller). mbtree is off because x264's macroblock-tree path is not reproducible here: encoding the same
# frames twice in one process gave different bitstreams (and decoded pixels differing by up to 23 levels) for
# ~1-2 % of clips with mbtree on, none in 1,120 encodes with it off (PyAV 18 / x264 core 165).
CODEC = "libx264"
PRESET = "fast"
CRF = 20
X264_PARAMS = "mbtree=0"


@dataclass
class _Obj:
    color: str
    shape: str
    size: str
    motion: str  # clip: the motion; grounding: "" (events carry the motions)
    cx: np.ndarray = field(default=None)  # [T] centre, pixels
    cy: np.ndarray = field(default=None)
    s: np.ndarray = field(default=None)  # [T] side of the shape's box, pixels
    alpha: np.ndarray = field(default=None)  # [T] opacity in [0, 1]

    @property
    def label(self) -> str:
        return f"{self.size} {self.color} {self.shape}"


# ------------------------------------------------------------------------------------------- rendering
def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Bilinear upsampling of a (cells+1)^2 grid of N(0, 1) values to [h, w]."""
    grid = rng.standard_normal((cells + 1, cells + 1))
    ys = np.linspace(0, cells, h)
    xs = np.linspace(0, cells, w)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    g00, g01 = grid[y0][:, x0], grid[y0][:, x0 + 1]
    g10, g11 = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fx) + g01 * fx) * (1 - fy) + (g10 * (1 - fx) + g11 * fx) * fy


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Low-contrast, low-saturation texture: a grey level, a faint tint, smooth noise and maybe stripes."""
    base = rng.uniform(85, 150)
    tint = rng.uniform(-8, 8, size=3)
    img = base + 12 * _smooth_noise(rng, h, w, int(rng.integers(2, 6)))
    if rng.random() < 0.5:
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(0.1, 0.3) * w
        yy, xx = np.mgrid[0:h, 0:w]
        img = img + 7 * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + rng.uniform(0, 6.3))
    rgb = img[:, :, None] + tint[None, None, :]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test in box coordinates u, v in [-1, 1] (v down); every shape touches all four box sides."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if shape == "triangle":  # apex at the top, base at the bottom
        return (v >= -1.0) & (v <= 1.0) & (np.abs(u) <= (v + 1.0) / 2.0)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "cross":
        au, av_ = np.abs(u), np.abs(v)
        return ((au <= 1.0) & (av_ <= 0.34)) | ((av_ <= 1.0) & (au <= 0.34))
    raise ValueError(f"unknown shape {shape!r}")


def _render(bg: np.ndarray, objs: Sequence[_Obj], num_frames: int) -> np.ndarray:
    h, w = bg.shape[:2]
    frames = np.broadcast_to(bg, (num_frames, h, w, 3)).copy()
    ys = np.arange(h) + 0.5
    xs = np.arange(w) + 0.5
    for t in range(num_frames):
        for o in objs:
            a = float(o.alpha[t])
            if a <= 0.0:
                continue
            cx, cy, half = float(o.cx[t]), float(o.cy[t]), float(o.s[t]) / 2
            x0, x1 = max(int(np.floor(cx - half)), 0), min(int(np.ceil(cx + half)), w)
            y0, y1 = max(int(np.floor(cy - half)), 0), min(int(np.ceil(cy + half)), h)
            if x1 <= x0 or y1 <= y0:
                continue
            m = _shape_mask(o.shape, ((xs[x0:x1] - cx) / half)[None, :], ((ys[y0:y1] - cy) / half)[:, None])
            region = frames[t, y0:y1, x0:x1]
            color = np.asarray(COLORS[o.color], dtype=np.float32)
            if a >= 1.0:
                region[m] = color.astype(np.uint8)
            else:
                region[m] = np.rint(a * color + (1 - a) * region[m].astype(np.float32)).astype(np.uint8)
    return frames


def _boxes(objs: Sequence[_Obj], w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """boxes [T, N, 4] float32 normalised (x1, y1, x2, y2), zeros where invisible; visible [T, N] (alpha >= .5)."""
    cx = np.stack([o.cx for o in objs], 1)
    cy = np.stack([o.cy for o in objs], 1)
    half = np.stack([o.s for o in objs], 1) / 2
    visible = np.stack([o.alpha for o in objs], 1) >= 0.5
    boxes = np.stack([(cx - half) / w, (cy - half) / h, (cx + half) / w, (cy + half) / h], -1)
    boxes = np.clip(boxes, 0.0, 1.0) * visible[..., None]
    return boxes.astype(np.float32), visible


def _no_overlap(objs: Sequence[_Obj], gap: float) -> bool:
    """No two objects' boxes touch (closer than ``gap`` px) on any frame where both are drawn."""
    for i in range(len(objs)):
        for j in range(i + 1, len(objs)):
            a, b = objs[i], objs[j]
            both = (a.alpha > 0) & (b.alpha > 0)
            reach = (a.s + b.s) / 2 + gap
            apart = (np.abs(a.cx - b.cx) >= reach) | (np.abs(a.cy - b.cy) >= reach)
            if not np.all(apart | ~both):
                return False
    return True


def _encode(path: Path, frames: np.ndarray, fps: int) -> None:
    tmp = path.with_name(path.stem + ".tmp.mp4")
    write_video(tmp, frames, fps, CODEC, threads=1,
                codec_options={"preset": PRESET, "crf": str(CRF), "g": str(fps), "x264-params": X264_PARAMS})
    os.replace(tmp, path)


def _save_boxes(path: Path, objs: Sequence[_Obj], w: int, h: int) -> None:
    boxes, visible = _boxes(objs, w, h)
    np.savez_compressed(
        path,
        boxes=boxes,
        visible=visible,
        labels=np.array([o.label for o in objs]),
        colors=np.array([o.color for o in objs]),
        shapes=np.array([o.shape for o in objs]),
        sizes=np.array([o.size for o in objs]),
        motions=np.array([o.motion for o in objs]),
    )


# ------------------------------------------------------------------------------------------- clips
def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _clip_trajectory(rng: np.random.Generator, o: _Obj, n: int, w: int) -> None:
    """Fill o.cx/cy/s/alpha for a square frame of side w and n frames; the shape stays inside the frame."""
    p = np.linspace(0.0, 1.0, n)
    s0 = SIZES[o.size] * w
    if o.motion == "grow":
        s = s0 * (1 + (GROW - 1) * p)
    elif o.motion == "shrink":
        s = s0 * (1 - (1 - SHRINK) * p)
    else:
        s = np.full(n, s0)
    lo = float(s.max()) / 2 + 0.03 * w  # keep a margin to the border
    hi = w - lo
    cx = np.full(n, rng.uniform(lo, hi))
    cy = np.full(n, rng.uniform(lo, hi))
    if o.motion in ("left", "right", "up", "down"):
        d = min(rng.uniform(*MOVE_RANGE) * w, hi - lo)
        first = rng.uniform(lo, hi - d)
        track = first + d * p if o.motion in ("right", "down") else (first + d) - d * p
        if o.motion in ("left", "right"):
            cx = track
        else:
            cy = track
    alpha = np.ones(n)
    if o.motion in ("appear", "disappear"):
        k = int(rng.integers(round(0.3 * n), round(0.6 * n) + 1))  # switch mid-clip
        if o.motion == "appear":
            alpha[:k] = 0.0
        else:
            alpha[k:] = 0.0
    o.cx, o.cy, o.s, o.alpha = cx, cy, s, alpha


def _sample_clip(rng: np.random.Generator, first_motion: str, n: int, w: int) -> list[_Obj]:
    """2-3 objects with distinct colours; the first has ``first_motion``; no overlaps on any frame."""
    while True:
        k = int(rng.integers(2, 4))
        colors = [list(COLORS)[i] for i in rng.choice(len(COLORS), size=k, replace=False)]
        objs = []
        for i, color in enumerate(colors):
            motion = first_motion if i == 0 else _pick(rng, MOTIONS)
            size = "small" if motion == "grow" else "large" if motion == "shrink" else _pick(rng, tuple(SIZES))
            objs.append(_Obj(color, _pick(rng, SHAPES), size, motion))
        for _ in range(100):
            for o in objs:
                _clip_trajectory(rng, o, n, w)
            if _no_overlap(objs, gap=0.02 * w):
                return objs


def _caption(rng: np.random.Generator, objs: Sequence[_Obj]) -> str:
    clauses = [f"a {o.label} {_pick(rng, PHRASES[o.motion])}" for o in objs]
    return _pick(rng, JOIN2 if len(clauses) == 2 else JOIN3).format(*clauses)


# ------------------------------------------------------------------------------------------- grounding
@dataclass(frozen=True)
class _Event:
    obj: int
    motion: str
    f0: int  # first frame of the event
    f1: int  # one past its last frame


def _event_frames(rng: np.random.Generator, n: int, k: int, fps: int) -> list[tuple[int, int]]:
    """k sequential [f0, f1) intervals in [0, n) with gaps >= 0.25 s before, between and after them."""
    gmin = max(1, round(0.25 * fps))
    lmin = max(1, round(1.25 * fps))
    while k > 1 and k * lmin + (k + 1) * gmin > n:  # (only at very low fps)
        k -= 1
    if k * lmin + (k + 1) * gmin > n:
        raise ValueError(f"a grounding video of {n} frames at {fps} fps is too short for an event")
    lmax = max(lmin, min(round(2.5 * fps), (n - (k + 1) * gmin) // k))
    lengths = rng.integers(lmin, lmax + 1, size=k)
    extra = n - int(lengths.sum()) - (k + 1) * gmin
    gaps = gmin + rng.multinomial(extra, np.full(k + 1, 1.0 / (k + 1)))
    spans, t = [], 0
    for i in range(k):
        t += int(gaps[i])
        spans.append((t, t + int(lengths[i])))
        t += int(lengths[i])
    return spans


def _sample_grounding(rng: np.random.Generator, n: int, w: int, fps: int) -> tuple[list[_Obj], list[_Event]]:
    """Objects still or absent except one per event; each (object, motion) pair occurs at most once."""
    margin = 0.03 * w
    while True:
        k_obj = int(rng.integers(2, 4))
        colors = [list(COLORS)[i] for i in rng.choice(len(COLORS), size=k_obj, replace=False)]
        objs = [_Obj(c, _pick(rng, SHAPES), _pick(rng, tuple(SIZES)), "") for c in colors]
        k_ev = int(rng.integers(GROUNDING_EVENTS[0], GROUNDING_EVENTS[1] + 1))
        spans = _event_frames(rng, n, k_ev, fps)
        # state per object: cx, cy, s, alpha (constant between events)
        state = []
        for i, o in enumerate(objs):
            s = SIZES[o.size] * w
            lo, hi = s / 2 + margin, w - s / 2 - margin
            visible = i == 0 or rng.random() < 0.75
            state.append([rng.uniform(lo, hi), rng.uniform(lo, hi), s, 1.0 if visible else 0.0])
        for o, st in zip(objs, state):
            o.cx, o.cy, o.s, o.alpha = (np.full(n, st[0]), np.full(n, st[1]), np.full(n, st[2]), np.full(n, st[3]))
        used: set[tuple[int, str]] = set()
        events: list[_Event] = []
        ok = True
        for f0, f1 in spans:
            options = []
            for i, (cx, cy, s, a) in enumerate(state):
                lo, hi = s / 2 + margin, w - s / 2 - margin
                small, large = SIZES["small"] * w, SIZES["large"] * w
                cand = []
                if a == 0.0:
                    cand = ["appear"]
                else:
                    cand += ["left"] if cx - lo >= 0.3 * w else []
                    cand += ["right"] if hi - cx >= 0.3 * w else []
                    cand += ["up"] if cy - lo >= 0.3 * w else []
                    cand += ["down"] if hi - cy >= 0.3 * w else []
                    cand += ["grow"] if s <= 1.3 * small and min(cx, cy, w - cx, w - cy) >= 0.9 * s + margin else []
                    cand += ["shrink"] if s >= 0.8 * large else []
                    cand += ["disappear"]
                options += [(i, m) for m in cand if (i, m) not in used]
            if not options:
                ok = False
                break
            # a motion first (uniform over the feasible ones, so the always-possible "disappear" does not
            # dominate), then an object that can do it
            motion = _pick(rng, sorted({m for _, m in options}, key=MOTIONS.index))
            i = _pick(rng, [j for j, m in options if m == motion])
            used.add((i, motion))
            events.append(_Event(i, motion, f0, f1))
            cx, cy, s, a = state[i]
            lo, hi = s / 2 + margin, w - s / 2 - margin
            new = list(state[i])
            if motion == "left":
                new[0] = cx - rng.uniform(0.3 * w, min(0.5 * w, cx - lo))
            elif motion == "right":
                new[0] = cx + rng.uniform(0.3 * w, min(0.5 * w, hi - cx))
            elif motion == "up":
                new[1] = cy - rng.uniform(0.3 * w, min(0.5 * w, cy - lo))
            elif motion == "down":
                new[1] = cy + rng.uniform(0.3 * w, min(0.5 * w, hi - cy))
            elif motion == "grow":
                new[2] = s * 1.8
            elif motion == "shrink":
                new[2] = s * 0.5
            elif motion == "appear":
                new[3] = 1.0
            elif motion == "disappear":
                new[3] = 0.0
            # linear change over the event's frames (reaching the new state on its last frame), hold after
            p = np.clip((np.arange(n) - f0 + 1) / (f1 - f0), 0.0, 1.0)
            o = objs[i]
            for arr, before, after in ((o.cx, cx, new[0]), (o.cy, cy, new[1]), (o.s, s, new[2]),
                                       (o.alpha, a, new[3])):
                arr[f0:] = before + (after - before) * p[f0:]
            state[i] = new
        if ok and _no_overlap(objs, gap=0.02 * w):
            # drop objects that never show (absent at the start and never chosen to appear)
            keep = [i for i, o in enumerate(objs) if o.alpha.max() > 0]
            remap = {old: new for new, old in enumerate(keep)}
            return [objs[i] for i in keep], [_Event(remap[e.obj], e.motion, e.f0, e.f1) for e in events]


def grounding_split(video_id: str) -> str:
    """The split of grounding video ``synthg_<g>`` for a trained head: test when g % 5 == 4, val when g % 5 == 3,
    else train (60/20/20 %; a video keeps its split when more grounding videos are generated)."""
    g = int(video_id.rsplit("_", 1)[1])
    return "test" if g % 5 == 4 else "val" if g % 5 == 3 else "train"


def _event_sentence(rng: np.random.Generator, o: _Obj, motion: str) -> str:
    return f"the {o.color} {o.shape} {_pick(rng, PHRASES[motion])}"


# ------------------------------------------------------------------------------------------- driver
def _split_counts(num_videos: int, splits: Sequence[float] | Sequence[int]) -> dict[str, int]:
    if len(splits) != 3:
        raise ValueError(f"splits must give (train, val, test), got {splits!r}")
    if all(isinstance(x, int) and not isinstance(x, bool) for x in splits):
        if any(x < 0 for x in splits) or sum(splits) != num_videos:
            raise ValueError(f"split counts {tuple(splits)} must be >= 0 and sum to num_videos={num_videos}")
        n_train, n_val, n_test = splits
    else:
        if any(x < 0 for x in splits) or abs(sum(splits) - 1.0) > 1e-6:
            raise ValueError(f"split fractions {tuple(splits)} must be >= 0 and sum to 1")
        n_val, n_test = round(splits[1] * num_videos), round(splits[2] * num_videos)
        n_train = num_videos - n_val - n_test
    return {"train": int(n_train), "val": int(n_val), "test": int(n_test)}


def _prepare_out_dir(out: Path) -> None:
    """Create ``out``; regenerate in place over an earlier synthetic dataset; refuse any other non-empty dir."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        meta = out / "meta.json"
        try:
            ours = json.loads(meta.read_text()).get("generator") == GENERATOR
        except (OSError, ValueError):
            ours = False
        if not ours:
            raise FileExistsError(f"{out} is not empty and holds no synthetic dataset (no meta.json from "
                                  f"{GENERATOR}); choose an empty or new directory")
        for sub in ("videos", "videos_grounding", "boxes"):
            if (out / sub).is_dir():
                shutil.rmtree(out / sub)
        for name in ("train.jsonl", "val.jsonl", "test.jsonl", "grounding.jsonl", "classes.json", "meta.json",
                     *(f"grounding_{k}.jsonl" for k in ("train", "val", "test"))):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def generate_synthetic(
    out_dir: str | os.PathLike,
    num_videos: int = 1000,
    seed: int = 0,
    *,
    splits: Sequence[float] | Sequence[int] = (0.8, 0.1, 0.1),
    size: int = 96,
    fps: int = 8,
    seconds: float = 2.0,
    grounding_videos: int = 40,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the synthetic dataset to ``out_dir`` and return a summary (counts, paths, time, bytes).

    ``splits``: fractions (train, val, test) of ``num_videos`` or explicit integer counts summing to it.
    Clips are ``size`` x ``size`` px, ``fps`` frames/s, ``seconds`` long; grounding videos are 8-12 s with
    2-4 sequential events. Regenerating into a directory that holds an earlier synthetic dataset replaces it.
    """
    from tqdm import tqdm

    if num_videos < 0 or grounding_videos < 0:
        raise ValueError("num_videos and grounding_videos must be >= 0")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if size < 32:
        raise ValueError(f"size must be >= 32 px (shapes need room to move), got {size}")
    fps, n = int(fps), round(seconds * fps)
    if fps < 1 or n < 4:
        raise ValueError(f"a clip needs >= 4 frames; got fps={fps}, seconds={seconds}")
    counts = _split_counts(num_videos, splits)
    t_start = time.perf_counter()
    out = Path(out_dir)
    _prepare_out_dir(out)
    # mark the directory as ours at once, so that an interrupted run can be regenerated over
    atomic_write_text(out / "meta.json", json.dumps({"generator": GENERATOR, "version": GENERATOR_VERSION,
                                                      "complete": False}) + "\n")
    for sub in ("videos", "videos_grounding", "boxes"):
        (out / sub).mkdir(exist_ok=True)

    duration = n / fps
    bar = tqdm(total=num_videos + grounding_videos, desc="synthetic videos", unit="video", disable=not progress)
    seen_scenes: set[frozenset] = set()
    manifests: dict[str, Path] = {}
    index = 0
    for split_no, (split, count) in enumerate(counts.items()):
        # balanced classes: the first object's motion cycles through the 9 classes, shuffled per split
        labels = [MOTIONS[i % len(MOTIONS)] for i in range(count)]
        order = np.random.default_rng([seed, 1, split_no]).permutation(count)
        rows = []
        for j in range(count):
            rng = np.random.default_rng([seed, 0, index])
            first = labels[int(order[j])]
            while True:
                objs = _sample_clip(rng, first, n, size)
                scene = frozenset((o.size, o.color, o.shape, o.motion) for o in objs)
                if scene not in seen_scenes:
                    seen_scenes.add(scene)
                    break
            caption = _caption(rng, objs)
            frames = _render(_background(rng, size, size), objs, n)
            vid = f"synth_{index:05d}"
            _encode(out / "videos" / f"{vid}.mp4", frames, fps)
            _save_boxes(out / "boxes" / f"{vid}.npz", objs, size, size)
            rows.append(ManifestRow(
                video_id=vid, path=f"videos/{vid}.mp4", text=caption, text_id=f"{vid}_0", split=split,
                duration=duration, label=first, boxes=f"boxes/{vid}.npz", source="synthetic"))
            index += 1
            bar.update(1)
        manifests[split] = write_manifest(out / f"{split}.jsonl", rows)

    g_rows, g_frames = [], 0
    for g in range(grounding_videos):
        rng = np.random.default_rng([seed, 2, g])
        gn = round(rng.uniform(*GROUNDING_SECONDS) * fps)
        objs, events = _sample_grounding(rng, gn, size, fps)
        frames = _render(_background(rng, size, size), objs, gn)
        vid = f"synthg_{g:04d}"
        _encode(out / "videos_grounding" / f"{vid}.mp4", frames, fps)
        for o in objs:  # the npz's per-object motion: the object's events in order, "+"-joined ("" = none)
            o.motion = "+".join(e.motion for e in events if objs[e.obj] is o)
        _save_boxes(out / "boxes" / f"{vid}.npz", objs, size, size)
        for e_no, e in enumerate(events):
            g_rows.append(ManifestRow(
                video_id=vid, path=f"videos_grounding/{vid}.mp4", text=_event_sentence(rng, objs[e.obj], e.motion),
                text_id=f"{vid}_{e_no}", split="grounding", start=e.f0 / fps, end=e.f1 / fps, duration=gn / fps,
                label=e.motion, boxes=f"boxes/{vid}.npz", source="synthetic"))
        g_frames += gn
        bar.update(1)
    bar.close()
    manifests["grounding"] = write_manifest(out / "grounding.jsonl", g_rows)
    for k in ("train", "val", "test"):  # by video, so held-out queries are about videos a head never saw
        rows_k = [replace(r, split=f"grounding_{k}") for r in g_rows if grounding_split(r.video_id) == k]
        manifests[f"grounding_{k}"] = write_manifest(out / f"grounding_{k}.jsonl", rows_k)

    classes = {
        "classes": list(MOTIONS),
        "label_rule": "the motion of the first object mentioned in the caption",
        "template": CLASS_TEMPLATE,
        "phrases": {m: PHRASES[m][0] for m in MOTIONS},
        "prompts": [CLASS_TEMPLATE.format(PHRASES[m][0]) for m in MOTIONS],
    }
    atomic_write_text(out / "classes.json", json.dumps(classes, indent=2) + "\n")
    meta = {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "counts": {**counts, "grounding_videos": grounding_videos, "grounding_queries": len(g_rows)},
        "params": {
            "size": size, "fps": fps, "seconds": seconds, "frames_per_clip": n,
            "grounding_seconds": list(GROUNDING_SECONDS), "grounding_events": list(GROUNDING_EVENTS),
            "codec": CODEC, "pix_fmt": "yuv420p", "preset": PRESET, "crf": CRF, "gop": fps,
            "x264_params": X264_PARAMS,
            "sizes_px": {k: round(v * size, 2) for k, v in SIZES.items()}, "grow": GROW, "shrink": SHRINK,
            "move_fraction": list(MOVE_RANGE),
        },
        "colors": {k: list(v) for k, v in COLORS.items()},
        "shapes": list(SHAPES),
        "motions": list(MOTIONS),
    }
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2) + "\n")

    total_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {
        "out_dir": str(out),
        "seed": seed,
        "counts": meta["counts"],
        "frames": {"clips": n * num_videos, "grounding": g_frames},
        "manifests": {k: str(v) for k, v in manifests.items()},
        "bytes": total_bytes,
        "seconds": round(time.perf_counter() - t_start, 2),
    }
