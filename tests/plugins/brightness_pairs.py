"""A plugin (``VTP_PLUGINS=tests/plugins/brightness_pairs.py``) that extends vtp_bench without touching ``src/``:

- an input, ``brightness``: each decoded frame's mean (normalised) pixel value, [T] per item;
- a method that reads it, ``frozen_bright``: Frozen in Time plus a small regression of the clip's mean brightness
  from its video embedding (a loss term ``bright``); its ``encode_video`` refuses a batch without the input, so an
  evaluation that scores it proves the evaluation clips carry the input too;
- a task, ``two_choice``: each video's own (first) caption against the next video's first caption; accuracy is
  the share of videos whose own caption scores higher (a tie counts one half), chance 50 %.

``tests/test_plugins.py`` runs it through ``list``, ``train``, ``eval`` and ``compare``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vtp_bench.data.evalset import Clip, DropsVideos, unique_videos
from vtp_bench.data.inputs import Input
from vtp_bench.data.manifest import ManifestRow, read_manifest
from vtp_bench.methods.frozen import Frozen, FrozenConfig
from vtp_bench.registry import INPUTS, METHODS, TASKS
from vtp_bench.tasks.base import Column, EvalTask, TaskReport, similarity


@INPUTS.register("brightness")
class Brightness(Input):
    name = "brightness"
    keys = ("brightness",)
    needs = frozenset({"video"})  # read from the decoded clip

    def load(self, item: Any) -> dict[str, Tensor]:
        return {"brightness": item.clip.video.mean(dim=(1, 2, 3))}

    @classmethod
    def fake(cls, cfg: Any, n: int, generator: torch.Generator, dtype: torch.dtype) -> dict[str, Tensor]:
        return {"brightness": torch.randn(n, int(cfg.data.num_frames), generator=generator, dtype=dtype)}


@dataclass
class FrozenBrightConfig(FrozenConfig):
    name: str = "frozen_bright"
    bright_weight: float = 0.1


@METHODS.register("frozen_bright")
class FrozenBright(Frozen):
    Config = FrozenBrightConfig

    def __init__(self, cfg: Any, loss_gather: str = "global") -> None:
        super().__init__(cfg, loss_gather)
        self.bright_head = nn.Linear(cfg.embed_dim, 1)

    @classmethod
    def data_inputs(cls, cfg: Any) -> frozenset[str]:
        return frozenset({"video", "brightness"})

    def encode_video(self, batch: dict[str, Any]) -> Any:
        if "brightness" not in batch:
            raise ValueError("frozen_bright: the batch lacks 'brightness' (the plugin input was not loaded)")
        return super().encode_video(batch)

    def losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        terms = super().losses(batch)
        pred = self.bright_head(self.encode_video(batch).pooled).squeeze(-1)
        real = batch["video_mask"].float()
        target = (batch["brightness"] * real).sum(1) / real.sum(1).clamp(min=1)
        return {**terms, "bright": self.cfg.bright_weight * nn.functional.mse_loss(pred, target)}


@dataclass
class PairSet(DropsVideos):
    manifest: Path
    video_ids: list[str]
    video_paths: list[Path]
    windows: list[tuple[float | None, float | None]]
    own: list[str]  # each video's first caption
    missing: list[str] = field(default_factory=list)
    rows: list[ManifestRow] = field(default_factory=list)

    per_video: ClassVar[tuple[str, ...]] = ("video_ids", "video_paths", "windows", "own", "rows")

    @property
    def clips(self) -> list[Clip]:
        return [Clip(i, p, *w) for i, (p, w) in enumerate(zip(self.video_paths, self.windows))]


@TASKS.register("two_choice")
class TwoChoice(EvalTask):
    name = "two_choice"
    headline = ("accuracy",)
    report = TaskReport(label="two-choice", columns=(Column("accuracy", "2-choice acc"),), main="accuracy",
                        main_label="two-choice accuracy (%)", order=90,
                        protocol={"num_videos": lambda r: r.get("num_videos")},
                        describe=lambda rs: f"{rs[0]['num_videos']} videos, own caption vs the next video's",
                        chance=lambda r: 50.0)

    def load(self, manifest: Path, video_root: Path | None, allow_missing: bool, cfg: Any,
             max_videos: int | None = None, check_videos: bool = True) -> PairSet:
        rows = read_manifest(manifest)
        videos = unique_videos(rows, manifest, video_root, allow_missing, max_videos, check_videos)
        first: dict[str, str] = {}
        for r in rows:
            first.setdefault(r.video_id, r.text)
        return PairSet(manifest, videos.ids, videos.paths, videos.windows, [first[v] for v in videos.ids],
                       videos.missing, videos.rows)

    def score(self, scorer: Any, clips: Any, eset: PairSet, cfg: Any) -> tuple[dict[str, float], dict[str, Any]]:
        n = len(eset.video_ids)
        other = [eset.own[(i + 1) % n] for i in range(n)]
        sim = similarity(scorer, scorer.encode_texts(eset.own + other, cfg.data.eval_batch_size), clips)
        outcome = [100.0 if sim[i, i] > sim[n + i, i] else 50.0 if sim[i, i] == sim[n + i, i] else 0.0
                   for i in range(n)]
        return ({"accuracy": sum(outcome) / n},
                {"num_videos": n, "per_query": {"accuracy": outcome, "ids": list(eset.video_ids)}})
