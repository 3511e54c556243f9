"""Frozen in Time (Bain et al., ICCV 2021): space-time ViT + BERT-family text encoder, NormSoftmax.

Faithful to ``m-bain/frozen-in-time`` (docs/methods/miles.md): the video feature is the CLS token
of the space-time transformer; the text feature is the [CLS] position of the text encoder;
``projection="minimal"`` is ``vid_proj = Linear(768, 256)`` and ``txt_proj = Sequential(ReLU, Linear)`` —
note the ReLU *before* the text projection; the loss is NormSoftmax with a fixed τ = 0.05, summed over the
two directions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from torch import Tensor, nn

from vtp_bench.losses import norm_softmax_loss
from vtp_bench.methods.base import Embeddings, Method
from vtp_bench.models.build import build_encoder
from vtp_bench.models.layouts import CheckpointLayout, LayoutMap
from vtp_bench.registry import CHECKPOINT_LAYOUTS, METHODS


@dataclass
class FrozenConfig:
    name: str = "frozen"
    # paper size: ViT-B/16, 4 frames, 224 px; DistilBERT-base
    video: dict[str, Any] = field(
        default_factory=lambda: {"name": "space_time_vit", "preset": "base", "num_frames": 4, "time_init": "zeros"}
    )
    text: dict[str, Any] = field(default_factory=lambda: {"name": "hf_text", "preset": "distilbert-base"})
    embed_dim: int = 256
    temperature: float = 0.05


@CHECKPOINT_LAYOUTS.register("frozen")
class FrozenLayout(CheckpointLayout):
    """Frozen-in-Time's released ``.pth`` (also MILES' and RegionLearner's): ``video_model.*`` (SpaceTimeTransformer),
    ``text_model.<HF keys>``, ``vid_proj.*`` and ``txt_proj.*`` (MCQ/MILES call it ``text_proj.*``)."""

    keys, aliases, priority = "frozen", ("miles", "regionlearner", "frozen-in-time"), 60

    def recognises(self, sd: Mapping[str, Any]) -> bool:
        return any(k.startswith(("video_model.", "vid_proj.", "txt_proj.", "text_proj.", "text_model.")) for k in sd)

    def normalise(self, sd: Mapping[str, Any]) -> dict[str, Any]:
        sd = super().normalise(sd)
        return {("txt_proj." + k[len("text_proj."):] if k.startswith("text_proj.") else k): v for k, v in sd.items()}


@METHODS.register("frozen")
class Frozen(Method):
    Config = FrozenConfig

    def __init__(self, cfg: Any, loss_gather: str = "global") -> None:
        super().__init__(cfg, loss_gather)
        self.video_model = build_encoder(cfg.video, "method.video")
        self.text_model = build_encoder(cfg.text, "method.text")
        self.vid_proj = nn.Sequential(nn.Linear(self.video_model.width, cfg.embed_dim))
        self.txt_proj = nn.Sequential(nn.ReLU(), nn.Linear(self.text_model.width, cfg.embed_dim))

    def checkpoint_prefixes(self, layout: CheckpointLayout) -> LayoutMap | None:
        """A Frozen-layout file: its towers where this method's towers take them, and both projections."""
        if layout.keys != "frozen":
            return super().checkpoint_prefixes(layout)
        return LayoutMap({**self.tower_prefixes(layout, "video_model", "text_model"), "vid_proj.": "vid_proj.",
                          "txt_proj.": "txt_proj."})

    def encode_video(self, batch: dict[str, Any]) -> Embeddings:
        out = self.video_model(batch["video"], batch.get("video_mask"))
        return Embeddings(pooled=self.vid_proj(out.pooled))

    def encode_text(self, batch: dict[str, Any]) -> Embeddings:
        out = self.text_model(batch["text"])
        return Embeddings(pooled=self.txt_proj(out.pooled))

    def losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        v = self.encode_video(batch).pooled
        t = self.encode_text(batch).pooled
        terms = norm_softmax_loss(t, v, self.cfg.temperature, self.loss_gather)
        return {"nce_t2v": terms["t2v"], "nce_v2t": terms["v2t"]}
