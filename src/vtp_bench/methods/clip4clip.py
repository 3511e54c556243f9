"""CLIP4Clip meanP (Luo et al., 2021; ``ArrowLuo/CLIP4Clip``): CLIP's image tower per frame, the mean of the
L2-normalised frame embeddings over the real frames, CLIP's text tower (EOT feature), and the symmetric InfoNCE
of CLIP with its learnable logit scale, clamped to ln 100 after every optimizer step.

This is also the base of ``promptswitch`` (same towers, temperature, loss and clamp), so the CLIP-specific input
handling lives here: pixels re-normalised from the data pipeline's ImageNet statistics to CLIP's, captions
tokenized with open_clip's BPE and cut to ``max_words`` tokens (CLIP4Clip's ``--max_words 32``).
Deviations from the official code are listed in docs/methods/clip4clip.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from vtp_bench.config import choice
from vtp_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vtp_bench.losses import norm_softmax_loss
from vtp_bench.methods.base import Embeddings, Method, Reported
from vtp_bench.models.build import build_encoder
from vtp_bench.models.clip_common import OPENAI_EXTRA_KEYS
from vtp_bench.models.layouts import CheckpointLayout, LayoutMap
from vtp_bench.registry import CHECKPOINT_LAYOUTS, METHODS

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PIXEL_NORMS = ("clip", "imagenet")


def imagenet_to_clip(video: Tensor) -> Tensor:
    """Frames normalised with ImageNet's mean/std (the data pipeline) -> normalised with CLIP's (what CLIP's
    weights were trained on): one per-channel affine map, [..., 3, H, W]."""
    shape = (3, 1, 1)
    m_in, s_in = video.new_tensor(IMAGENET_MEAN).view(shape), video.new_tensor(IMAGENET_STD).view(shape)
    m_out, s_out = video.new_tensor(CLIP_MEAN).view(shape), video.new_tensor(CLIP_STD).view(shape)
    return (video * s_in + m_in - m_out) / s_out


def cut_tokens(ids: Tensor, max_words: int) -> Tensor:
    """open_clip ids [B, 77] (<sot> ... <eot>, 0-padded) -> at most ``max_words`` columns, a cut row ending in
    <eot> (CLIP4Clip's ``max_words``), and no column after the batch's last <eot>: with causal attention and
    EOT pooling, trailing padding cannot change any feature, so dropping it only saves time."""
    eot_id = int(ids.max())  # <eot> is the highest id of open_clip's vocabulary, in every row
    eot = ids.argmax(dim=-1)
    if max_words < ids.shape[1]:
        ids = ids[:, :max_words].clone()
        cut = eot >= max_words
        ids[cut, max_words - 1] = eot_id
        eot = torch.where(cut, torch.full_like(eot, max_words - 1), eot)
    return ids[:, : int(eot.max()) + 1]


@dataclass
class Clip4ClipConfig:
    name: str = "clip4clip"
    # paper size: CLIP ViT-B/32 towers; weights from a local OpenAI / open_clip / HF file via init.checkpoint
    video: dict[str, Any] = field(default_factory=lambda: {"name": "clip_vit", "preset": "ViT-B-32"})
    text: dict[str, Any] = field(default_factory=lambda: {"name": "clip_text", "preset": "ViT-B-32"})
    max_words: int = 32  # CLIP4Clip's --max_words 32 (<sot> + 30 tokens + <eot>)
    logit_scale_init: float = math.log(1 / 0.07)  # CLIP's initial value; a CLIP checkpoint replaces it
    logit_scale_max: float = math.log(100)  # clamp after every optimizer step (CLIP, CLIP4Clip, Prompt Switch)
    pixel_norm: str = choice("clip", PIXEL_NORMS)  # clip: frames re-normalised to CLIP's mean/std (see pixels)


# the parameters of CLIP4Clip's other similarity heads (seqLSTM, seqTransf, tightTransf): not this meanP model
OTHER_SIM_HEADERS = ("frame_position_embeddings.", "transformerClip.", "lstm_visual.", "cross.", "similarity_dense.")


@CHECKPOINT_LAYOUTS.register("clip4clip")
class Clip4ClipLayout(CheckpointLayout):
    """CLIP4Clip's saved ``pytorch_model.bin.<epoch>``: OpenAI CLIP's names under ``clip.`` (both towers and
    ``logit_scale``), plus the sequence head of ``--sim_header seqTransf`` / ``seqLSTM`` / ``tightTransf`` if one
    was trained. Normalised to open_clip's names; a sequence head is refused by name (only meanP is here)."""

    keys, priority = "open_clip", 90

    def recognises(self, sd: Mapping[str, Any]) -> bool:
        return any(k.startswith(("clip.visual.", "clip.token_embedding.")) for k in sd)

    def normalise(self, sd: Mapping[str, Any]) -> dict[str, Any]:
        from vtp_bench.models.checkpoints import CheckpointError

        heads = sorted({k.split(".")[0] for k in sd if k.startswith(OTHER_SIM_HEADERS)})
        if heads:
            raise CheckpointError("this CLIP4Clip file was trained with a sequence similarity head "
                                  f"({', '.join(heads)}: "
                                  f"--sim_header seqTransf / seqLSTM / tightTransf); vtp_bench's clip4clip is the "
                                  "meanP model (parameter-free mean pooling), so its scores would not be the file's")
        out = {k[len("clip."):]: v for k, v in sd.items() if k.startswith("clip.")}
        out.update({k: v for k, v in sd.items() if not k.startswith("clip.")})
        return {k: v for k, v in out.items() if k not in OPENAI_EXTRA_KEYS}


@METHODS.register("clip4clip")
class Clip4Clip(Method):
    Config = Clip4ClipConfig
    reported = (Reported("msrvtt_1ka", "fine-tuned meanP (mmaction2)",
                         {"t2v/R@1": 43.1, "t2v/R@5": 69.4, "t2v/R@10": 78.9, "t2v/MedR": 2.0, "t2v/MeanR": 16.8},
                         "mmaction2's re-implementation of CLIP4Clip meanP (ViT-B/32, 12 frames)", 1000),)

    def __init__(self, cfg: Any, loss_gather: str = "global") -> None:
        super().__init__(cfg, loss_gather)
        if cfg.video.get("name") != "clip_vit" or cfg.text.get("name") != "clip_text":
            raise ValueError(f"{cfg.name} needs method.video.name=clip_vit and method.text.name=clip_text")
        self.video_model = build_encoder(cfg.video, "method.video")
        self.text_model = build_encoder(cfg.text, "method.text")
        if self.video_model.width != self.text_model.width:
            raise ValueError(f"method.video and method.text embed to {self.video_model.width} and "
                             f"{self.text_model.width} dims; use towers of one CLIP model (same preset)")
        if not 2 <= cfg.max_words <= self.text_model.context_length:
            raise ValueError(f"method.max_words must be in [2, {self.text_model.context_length}], got {cfg.max_words}")
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init)))

    def checkpoint_prefixes(self, layout: CheckpointLayout) -> LayoutMap | None:
        """Any CLIP file (OpenAI, open_clip, HuggingFace, CLIP4Clip): both towers and ``logit_scale``."""
        if layout.keys != "open_clip":
            return super().checkpoint_prefixes(layout)
        return LayoutMap({**self.tower_prefixes(layout, "video_model", "text_model"), "logit_scale": "logit_scale"})

    # --- inputs ---------------------------------------------------------------------------------------
    def pixels(self, video: Tensor) -> Tensor:
        return imagenet_to_clip(video) if self.cfg.pixel_norm == "clip" else video

    def tokens(self, texts: list[str]) -> Tensor:
        ids = self.text_model.tokenize(texts)
        return cut_tokens(ids, self.cfg.max_words).to(self.logit_scale.device)

    # --- encoders -------------------------------------------------------------------------------------
    def encode_video(self, batch: dict[str, Any]) -> Embeddings:
        out = self.video_model(self.pixels(batch["video"]), batch.get("video_mask"))
        return Embeddings(pooled=out.pooled)

    def encode_text(self, batch: dict[str, Any]) -> Embeddings:
        return Embeddings(pooled=self.text_model(self.tokens(batch["text"])).pooled)

    # --- training -------------------------------------------------------------------------------------
    def contrastive(self, text: Tensor, video: Tensor) -> dict[str, Tensor]:
        """½ (CE text->video + CE video->text) of cosine x exp(logit_scale), as CLIP4Clip's and Prompt Switch's
        ``(loss_t2v + loss_v2t) / 2``; negatives from every rank with exact gradients (``loss.gather``)."""
        terms = norm_softmax_loss(text, video, self.logit_scale.exp().reciprocal(), self.loss_gather)
        return {"nce_t2v": 0.5 * terms["t2v"], "nce_v2t": 0.5 * terms["v2t"]}

    def losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        return self.contrastive(self.encode_text(batch).pooled, self.encode_video(batch).pooled)

    def train_stats(self) -> dict[str, Tensor]:
        return {"logit_scale": self.logit_scale.detach().exp()}

    def on_train_batch_end(self, step: int) -> None:
        """CLIP's clamp, after the optimizer step (official: ``torch.clamp_(logit_scale, max=ln 100)``)."""
        with torch.no_grad():
            self.logit_scale.clamp_(max=self.cfg.logit_scale_max)
