"""Procedural video-text data: real H.264 mp4 files whose captions are generated from the ground truth.

Each retrieval clip shows 2-3 objects (shape, colour, size) on a textured background, each with a motion
(left, right, up, down, grow, shrink, still, appear, disappear); the caption describes every object
("a small red circle moves left while a large blue square grows"). The same ground truth gives per-frame
boxes (region-based methods), a class label per clip (zero-shot classification: the first object's motion)
and a grounding split of longer videos with 2-4 sequential events, each with start/end seconds.
Deterministic by seed: the same seed gives the same manifests and the same decoded frames.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from tqdm import tqdm

from vtp_bench.data.manifest import ManifestRow, write_manifest

GENERATOR_VERSION = 1
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30), "green": (30, 190, 40), "blue": (40, 70, 245), "yellow": (245, 225, 30),
    "magenta": (225, 40, 225), "cyan": (30, 215, 230), "orange": (250, 135, 15),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
SIZES = {"small": 0.075, "large": 0.14}  # half-extent as a fraction of the frame side
MOTIONS = ("left", "right", "up", "down", "grow", "shrink", "still", "appear", "disappear")
PHRASES = {
    "left": ("moves left", "slides to the left"), "right": ("moves right", "slides to the right"),
    "up": ("moves up", "rises"), "down": ("moves down", "falls"), "grow": ("grows", "gets bigger"),
    "shrink": ("shrinks", "gets smaller"), "still": ("stays still", "does not move"),
    "appear": ("appears", "shows up"), "disappear": ("disappears", "vanishes"),
}
TRAVEL = 0.35  # a moving object travels 35 % of the frame
SCALE_RANGE = (0.55, 1.45)  # grow: from 0.55x to 1.45x of its size (shrink: reversed)


@dataclass
class ObjectTrack:
    color: str
    shape: str
    size: str
    motion: str
    x: np.ndarray  # [F] centre, fraction of width
    y: np.ndarray
    scale: np.ndarray  # [F] multiplier of the size's half-extent
    visible: np.ndarray  # [F] bool

    @property
    def name(self) -> str:
        return f"{self.size} {self.color} {self.shape}"


# --- rendering --------------------------------------------------------------------------------------------
def _shape_mask(shape: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    if shape == "triangle":  # apex up
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    if shape == "cross":
        arm = r * 0.33
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    raise ValueError(shape)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-contrast smooth texture (stripes + blurred noise) around a random grey level."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = rng.uniform(60, 120)
    angle, freq = rng.uniform(0, np.pi), rng.uniform(0.05, 0.2)
    stripes = 12 * np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)))
    noise = rng.normal(0, 1, (size // 8 + 1, size // 8 + 1)).astype(np.float32)
    noise = np.kron(noise, np.ones((8, 8), np.float32))[:size, :size] * 8
    tint = rng.uniform(-10, 10, 3).astype(np.float32)
    img = base + stripes[..., None] + noise[..., None] + tint
    return np.clip(img, 0, 255).astype(np.float32)


def render(tracks: list[ObjectTrack], background: np.ndarray, num_frames: int) -> np.ndarray:
    size = background.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for f in range(num_frames):
        img = background.copy()
        for t in tracks:
            if t.visible[f]:
                r = SIZES[t.size] * t.scale[f] * size
                m = _shape_mask(t.shape, xx, yy, t.x[f] * size, t.y[f] * size, r)
                img[m] = COLORS[t.color]
        frames[f] = img.astype(np.uint8)
    return frames


def boxes_of(tracks: list[ObjectTrack]) -> np.ndarray:
    """[F, O, 4] normalised (x1, y1, x2, y2) of every object's extent (as drawn), clipped to the frame."""
    out = []
    for t in tracks:
        r = SIZES[t.size] * t.scale
        out.append(np.stack([t.x - r, t.y - r, t.x + r, t.y + r], axis=-1))
    return np.clip(np.stack(out, axis=1), 0.0, 1.0).astype(np.float32)


def write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.options = {"crf": "16", "preset": "veryfast", "g": "8", "threads": "1"}
        for arr in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")))
        container.mux(stream.encode())


# --- retrieval clips ----------------------------------------------------------------------------------------
def _track(rng: random.Random, color: str, shape: str, size: str, motion: str, n: int,
           taken: list[tuple[float, float]]) -> ObjectTrack:
    """Start/end positions chosen so that the motion stays inside the frame and objects rarely overlap."""
    margin = SIZES[size] * SCALE_RANGE[1] + 0.02
    best = None
    for _ in range(30):
        x0, y0 = rng.uniform(margin, 1 - margin), rng.uniform(margin, 1 - margin)
        dx = {"left": -TRAVEL, "right": TRAVEL}.get(motion, 0.0)
        dy = {"up": -TRAVEL, "down": TRAVEL}.get(motion, 0.0)
        if dx:
            x0 = rng.uniform(margin, 1 - margin - TRAVEL) + (TRAVEL if dx < 0 else 0.0)
        if dy:
            y0 = rng.uniform(margin, 1 - margin - TRAVEL) + (TRAVEL if dy < 0 else 0.0)
        gap = min((abs(x0 - a) + abs(y0 - b) for a, b in taken), default=1.0)
        if best is None or gap > best[0]:
            best = (gap, x0, y0, dx, dy)
        if gap > 0.3:
            break
    _, x0, y0, dx, dy = best  # type: ignore[misc]
    taken.append((x0 + dx / 2, y0 + dy / 2))
    s = np.linspace(0.0, 1.0, n)
    scale = np.ones(n)
    if motion == "grow":
        scale = SCALE_RANGE[0] + (SCALE_RANGE[1] - SCALE_RANGE[0]) * s
    elif motion == "shrink":
        scale = SCALE_RANGE[1] - (SCALE_RANGE[1] - SCALE_RANGE[0]) * s
    visible = np.ones(n, bool)
    if motion == "appear":
        visible[: n // 2] = False
    elif motion == "disappear":
        visible[n // 2 :] = False
    return ObjectTrack(color, shape, size, motion, x0 + dx * s, y0 + dy * s, scale, visible)


def _describe(t: ObjectTrack, rng: random.Random) -> str:
    return f"a {t.size} {t.color} {t.shape} {rng.choice(PHRASES[t.motion])}"


def caption(tracks: list[ObjectTrack], rng: random.Random) -> str:
    parts = [_describe(t, rng) for t in tracks]
    if len(parts) == 2:
        return f"{parts[0]} {rng.choice(('while', 'as', 'and'))} {parts[1]}"
    return f"{parts[0]}, {parts[1]} and {parts[2]}"


def sample_clip(rng: random.Random, num_frames: int) -> list[ObjectTrack]:
    k = rng.choice((2, 3))
    looks: set[tuple[str, str]] = set()
    tracks: list[ObjectTrack] = []
    taken: list[tuple[float, float]] = []
    while len(tracks) < k:
        color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
        if (color, shape) in looks:
            continue
        looks.add((color, shape))
        tracks.append(_track(rng, color, shape, rng.choice(list(SIZES)), rng.choice(MOTIONS), num_frames, taken))
    return tracks


# --- grounding videos ----------------------------------------------------------------------------------------
GROUNDING_MOTIONS = ("left", "right", "up", "down", "grow", "shrink")


def sample_grounding(rng: random.Random, num_frames: int, fps: int) -> tuple[list[ObjectTrack], list[dict[str, Any]]]:
    """2-3 still objects; 2-4 sequential events, each one object doing one motion in its own time slot."""
    tracks = sample_clip(rng, num_frames)
    for t in tracks:  # start still and visible; events write their motion into the track
        t.motion = "still"
        t.x[:] = rng.uniform(0.3, 0.7)
        t.y[:] = rng.uniform(0.3, 0.7)
        t.scale[:] = 1.0
        t.visible[:] = True
    k = rng.randint(2, 4)
    slot = num_frames // k
    events = []
    for e in range(k):
        a = e * slot + rng.randint(0, slot // 4)
        b = (e + 1) * slot - rng.randint(0, slot // 4)
        t = rng.choice(tracks)
        motion = rng.choice(GROUNDING_MOTIONS)
        s = np.linspace(0.0, 1.0, b - a)
        if motion in ("left", "right", "up", "down"):
            arr = t.x if motion in ("left", "right") else t.y
            sign = -1.0 if motion in ("left", "up") else 1.0
            start = arr[a]
            if not 0.15 <= start + sign * 0.3 <= 0.85:  # would leave the frame: go the other way
                sign, motion = -sign, {"left": "right", "right": "left", "up": "down", "down": "up"}[motion]
            arr[a:b] = start + sign * 0.3 * s
            arr[b:] = arr[b - 1]
        else:
            lo, hi = (0.6, 1.4) if motion == "grow" else (1.4, 0.6)
            cur = t.scale[a]
            target = np.clip(cur * (hi / lo if motion == "grow" else lo / hi), 0.5, 1.6)
            if abs(target - cur) < 0.3:  # already at the limit: do the opposite
                motion = "shrink" if motion == "grow" else "grow"
                target = np.clip(cur * (1.8 if motion == "grow" else 0.55), 0.5, 1.6)
            t.scale[a:b] = cur + (target - cur) * s
            t.scale[b:] = t.scale[b - 1]
        events.append({"start": round(a / fps, 3), "end": round(b / fps, 3),
                       "text": f"the {t.name} {rng.choice(PHRASES[motion])}"})
    return tracks, events


# --- the dataset ------------------------------------------------------------------------------------------------
def _split_counts(num_videos: int, splits: tuple[float, float, float]) -> dict[str, int]:
    n_val = int(round(num_videos * splits[1]))
    n_test = int(round(num_videos * splits[2]))
    return {"train": num_videos - n_val - n_test, "val": n_val, "test": n_test}


def generate_synthetic(
    out_dir: str | Path,
    num_videos: int = 1000,
    seed: int = 0,
    *,
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1),
    size: int = 96,
    fps: int = 8,
    seconds: float = 2.0,
    grounding_videos: int = 40,
    grounding_seconds: float = 10.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Write videos, boxes and manifests under ``out_dir``; returns a summary (also in ``meta.json``)."""
    out = Path(out_dir)
    (out / "boxes").mkdir(parents=True, exist_ok=True)
    counts = _split_counts(num_videos, splits)
    n = int(round(seconds * fps))
    manifests: dict[str, list[ManifestRow]] = {}
    bar = tqdm(total=num_videos + grounding_videos, desc="synthetic videos", disable=not progress, unit="video")
    vid = 0
    for split, count in counts.items():
        rng = random.Random(f"{seed}-{split}")
        seen: set[str] = set()
        rows = []
        while len(rows) < count:
            tracks = sample_clip(rng, n)
            text = caption(tracks, rng)
            if text in seen:  # captions are unique within a split
                continue
            seen.add(text)
            video_id = f"synth{vid:05d}"
            bg = _background(np.random.default_rng([seed, vid]), size)
            write_mp4(out / "videos" / f"{video_id}.mp4", render(tracks, bg, n), fps)
            np.savez_compressed(out / "boxes" / f"{video_id}.npz", boxes=boxes_of(tracks),
                                visible=np.stack([t.visible for t in tracks], 1),
                                labels=np.array([t.name for t in tracks]))
            rows.append(ManifestRow(
                video_id=video_id, path=f"videos/{video_id}.mp4", text=text, text_id=f"{video_id}_0", split=split,
                duration=n / fps, label=tracks[0].motion, boxes=f"boxes/{video_id}.npz", source="synthetic",
            ))
            vid += 1
            bar.update()
        manifests[split] = rows
        write_manifest(out / f"{split}.jsonl", rows)
    rng = random.Random(f"{seed}-grounding")
    g_frames = int(round(grounding_seconds * fps))
    g_rows = []
    for g in range(grounding_videos):
        tracks, events = sample_grounding(rng, g_frames, fps)
        video_id = f"ground{g:04d}"
        bg = _background(np.random.default_rng([seed, 10**6 + g]), size)
        write_mp4(out / "videos_grounding" / f"{video_id}.mp4", render(tracks, bg, g_frames), fps)
        for e, ev in enumerate(events):
            g_rows.append(ManifestRow(
                video_id=video_id, path=f"videos_grounding/{video_id}.mp4", text=ev["text"],
                text_id=f"{video_id}_{e}", split="grounding", start=ev["start"], end=ev["end"],
                duration=g_frames / fps, source="synthetic",
            ))
        bar.update()
    bar.close()
    if g_rows:
        write_manifest(out / "grounding.jsonl", g_rows)
    (out / "classes.json").write_text(json.dumps(
        {"classes": [PHRASES[m][0] for m in MOTIONS], "labels": list(MOTIONS),
         "template": "a video of something that {}"}, indent=2))
    summary = {
        "generator_version": GENERATOR_VERSION, "seed": seed, "out_dir": str(out),
        "videos": counts, "grounding_videos": grounding_videos, "grounding_queries": len(g_rows),
        "size": size, "fps": fps, "seconds": seconds, "grounding_seconds": grounding_seconds,
        "chance_r1_test": 100.0 / max(1, counts["test"]),
    }
    (out / "meta.json").write_text(json.dumps(summary, indent=2))
    return summary
