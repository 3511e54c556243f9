"""A known-answer "oracle" for evaluation tests: embeddings that encode which video a clip is and which video a
caption names, so the exact rank of every query is known before evaluation runs.

- Videos: ``write_coded_videos`` writes real H.264 mp4 files of one solid colour each (colour = the video's code,
  from a 4x4x4 palette); ``pixel_codes`` reads the code back from the decoded, resized, cropped, normalised clip
  the pipeline hands to a method. In ``ids`` mode the code comes from ``batch["video_id"]`` and a table instead
  (for datasets whose pixels carry no code, e.g. the synthetic split).
- Captions: ``"clip 17 ..."`` names code 17 (or a caption -> code table).
- Scores: a video of code g is one-hot at g; a caption naming code k is ``e_k[j] = D - ((j - k) mod D)``, so the
  cosine score of video g for caption k falls strictly with ``(g - k) mod D`` and the caption's rank of video g
  is exactly ``((g - k) mod D) + 1`` (no ties among videos of distinct codes).

Loaded as a plugin (``VTP_PLUGINS=tests/helpers/oracle.py``) the ``oracle`` method also works in the subprocesses
of a ``--devices 2`` evaluation: so this file imports nothing from the test suite at its top. Below the method, what
the test modules build from it: ``oracle_checkpoint``, ``named_codes`` of manifest rows, and the colour-coded
grounding set (``SEGMENTS``, ``write_coded_grounding``; the ``coded_grounding`` fixture of ``tests/conftest.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vtp_bench.data.manifest import ManifestRow, write_manifest
from vtp_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vtp_bench.data.video_write import write_video
from vtp_bench.methods.base import Embeddings, Method
from vtp_bench.registry import METHODS

LEVELS = (32, 96, 160, 224)
PALETTE = [(r, g, b) for r in LEVELS for g in LEVELS for b in LEVELS]  # 64 colours, 64 levels apart
CAPTION_CODE = re.compile(r"\bclip (\d+)\b")


def write_colour_video(path: Path, colours: list[tuple[int, int, int]], fps: int = 4,
                       size: tuple[int, int] = (40, 56)) -> Path:
    """A real H.264 mp4 whose frame i is the solid colour ``colours[i]`` (not square, so the eval transform's
    centre crop runs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, (np.full((*size, 3), colour, dtype=np.uint8) for colour in colours), fps)


def write_coded_videos(folder: Path, codes: list[int], frames: int = 6) -> list[Path]:
    """One mp4 per code (``coded_<code>.mp4``), every frame the palette colour of the code."""
    return [write_colour_video(folder / f"coded_{code:02d}.mp4", [PALETTE[code]] * frames) for code in codes]


def write_segment_video(path: Path, codes_per_second: list[int], fps: int = 4) -> Path:
    """One mp4 whose second t shows the palette colour of ``codes_per_second[t]`` (for grounding)."""
    return write_colour_video(path, [PALETTE[c] for c in codes_per_second for _ in range(fps)], fps)


def pixel_codes(video: Tensor, mask: Tensor | None) -> Tensor:
    """[B, T, 3, H, W] normalised clips -> the palette code of each clip's mean colour over its real frames."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=video.dtype, device=video.device).view(1, 1, 3)
    std = torch.tensor(IMAGENET_STD, dtype=video.dtype, device=video.device).view(1, 1, 3)
    per_frame = video.mean(dim=(-1, -2)) * std + mean  # [B, T, 3] in [0, 1]
    m = torch.ones(per_frame.shape[:2], dtype=torch.bool) if mask is None else mask.cpu()
    rgb = torch.stack([per_frame[b][m[b]].mean(0) for b in range(len(per_frame))]) * 255
    palette = torch.tensor(PALETTE, dtype=rgb.dtype, device=rgb.device)
    return torch.cdist(rgb.float(), palette.float()).argmin(dim=1)


def video_embedding(codes: Tensor, dim: int) -> Tensor:
    return torch.nn.functional.one_hot(codes.long(), dim).float()


def text_embedding(codes: Tensor, dim: int) -> Tensor:
    j = torch.arange(dim)
    return (dim - (j[None, :] - codes.long()[:, None]) % dim).float()


def caption_code(text: str, table: dict[str, int] | None = None) -> int:
    if table is not None:
        return table[text]
    m = CAPTION_CODE.search(text)
    if m is None:
        raise ValueError(f"oracle caption {text!r} names no 'clip <code>'")
    return int(m.group(1))


def encode_video(batch: dict[str, Any], dim: int, video_codes: dict[str, int] | None = None) -> Embeddings:
    """The oracle's video side: pooled one-hot; also as a 2-token local feature with its mask, for methods whose
    similarity reads tokens."""
    if video_codes is None:
        codes = pixel_codes(batch["video"], batch.get("video_mask"))
    else:
        codes = torch.tensor([video_codes[v] for v in batch["video_id"]])
    pooled = video_embedding(codes, dim).to(batch["video"].dtype)
    return Embeddings(pooled=pooled, tokens=pooled[:, None].repeat(1, 2, 1),
                      mask=torch.ones(len(pooled), 2, dtype=torch.bool))


def encode_text(batch: dict[str, Any], dim: int, text_codes: dict[str, int] | None = None) -> Embeddings:
    codes = torch.tensor([caption_code(t, text_codes) for t in batch["text"]])
    pooled = text_embedding(codes, dim)
    return Embeddings(pooled=pooled, tokens=pooled[:, None].repeat(1, 3, 1),
                      mask=torch.ones(len(pooled), 3, dtype=torch.bool))


@dataclass
class OracleConfig:
    name: str = "oracle"
    dim: int = 64  # number of codes
    video_codes: dict[str, Any] = field(default_factory=dict)  # video_id -> code; empty: read it from the pixels
    text_codes: dict[str, Any] = field(default_factory=dict)  # caption -> code; empty: parse "clip <code>"
    text_onehot: bool = False  # captions one-hot too: a clip matches its code and nothing else (grounding)


@METHODS.register("oracle")
class Oracle(Method):
    """Known-answer method for tests (``tests/helpers/oracle.py``); one parameter so that it is a normal
    checkpoint."""

    Config = OracleConfig

    def __init__(self, cfg: Any, loss_gather: str = "global") -> None:
        super().__init__(cfg, loss_gather)
        self.unused = torch.nn.Parameter(torch.zeros(1))
        self.video_codes = dict(cfg.video_codes) or None
        self.text_codes = dict(cfg.text_codes) or None

    def encode_video(self, batch: dict[str, Any]) -> Embeddings:
        return encode_video(batch, self.cfg.dim, self.video_codes)

    def encode_text(self, batch: dict[str, Any]) -> Embeddings:
        if self.cfg.text_onehot:
            codes = torch.tensor([caption_code(t, self.text_codes) for t in batch["text"]])
            return Embeddings(pooled=video_embedding(codes, self.cfg.dim))
        return encode_text(batch, self.cfg.dim, self.text_codes)

    def losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        return {"zero": self.unused.sum() * 0}


def expected_t2v(video_code_of_text: list[int], named_code_of_text: list[int], dim: int) -> dict[str, float]:
    """The t2v metrics in closed form: the rank of each query is ((g - k) mod dim) + 1."""
    ranks = np.array([(g - k) % dim + 1 for g, k in zip(video_code_of_text, named_code_of_text)], dtype=float)
    out = {f"t2v/R@{k}": float(100.0 * (ranks <= k).mean()) for k in (1, 5, 10)}
    out["t2v/MedR"] = float(np.median(ranks))
    out["t2v/MeanR"] = float(ranks.mean())
    return out


# --- what the tests build from the oracle -------------------------------------------------------------------------
def oracle_checkpoint(path: Path, dim: int, video_codes: dict | None = None, text_codes: dict | None = None,
                      text_onehot: bool = False) -> Path:
    """A checkpoint of the oracle method (``vtp-bench eval --ckpt`` reads it like any other) at ``path``."""
    from helpers.runs import save_checkpoint  # here, not at the top: the plugin subprocesses have no tests/ path
    from vtp_bench.config import config_from_dict, to_dict
    from vtp_bench.lit import VTPModule

    cfg = config_from_dict({"name": "oracle_test", "method": {"name": "oracle", "dim": dim,
                                                               "video_codes": video_codes or {},
                                                               "text_codes": text_codes or {},
                                                               "text_onehot": text_onehot},
                            "data": {"num_frames": 4, "img_size": 32, "eval_batch_size": 3, "num_workers": 0}})
    return save_checkpoint(VTPModule(to_dict(cfg)), path)


def named_codes(rows: list[ManifestRow]) -> dict[str, int]:
    """text_id -> the code each row's caption names ("clip <code> ...")."""
    return {r.text_id: caption_code(r.text) for r in rows}


SEGMENTS = {"g0": [0, 0, 1, 1, 2, 2], "g1": [3, 3, 3, 0, 0, 1], "g2": [2, 4, 4, 4, 4, 0]}  # a code per second


def write_coded_grounding(root: Path) -> Path:
    """``root/charades_sta``: the 3 videos of ``SEGMENTS`` (6 s each, second t coloured by its code) and a test
    manifest with one query per code shown in a video ("clip <code>"), its moment where that code is shown."""
    for vid, codes in SEGMENTS.items():
        write_segment_video(root / "charades_sta" / "videos" / f"{vid}.mp4", codes)
    rows = []
    for vid, codes in SEGMENTS.items():
        for code in sorted(set(codes)):
            secs = [t for t, c in enumerate(codes) if c == code]
            rows.append(ManifestRow(video_id=vid, path=f"videos/{vid}.mp4", text=f"clip {code}",
                                    text_id=f"{vid}_{code}", split="test", start=float(secs[0]),
                                    end=float(secs[-1] + 1), duration=6.0, source="test"))
    write_manifest(root / "charades_sta" / "test.jsonl", rows)
    return root
