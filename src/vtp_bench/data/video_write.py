"""Writing frames as a video file: one encoder loop for the synthetic dataset and the tests' known-answer videos
(the reader is ``video.py``)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import numpy as np


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: int, codec: str = "libx264",
                fmt: str | None = "mp4", codec_options: dict[str, str] | None = None,
                container_options: dict[str, str] | None = None, threads: int | None = None) -> Path:
    """Encode RGB frames ([H, W, 3] uint8, all one size) at ``fps`` frames per second, frame i at time i / fps, in
    yuv420p; ``fmt``: the container (None: from the suffix)."""
    frames = iter(frames)
    first = next(frames)
    with av.open(str(path), mode="w", format=fmt, options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=Fraction(fps, 1))
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        if threads is not None:
            stream.codec_context.thread_count = threads
        if codec_options:
            stream.codec_context.options = dict(codec_options)
        for i, img in enumerate([first, *frames]):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)
