"""Prompt Switch (Deng et al., ICCV 2023; ``bladewaltz1/PromptSwitch``): CLIP4Clip meanP plus a Prompt Cube
switched across the frames inside CLIP's image tower, and an auxiliary captioner during training.

- **Prompt Cube**: a learnable ``[Np, Np, W]`` tensor. Every chunk of Np frames gets a copy: frame i of the
  chunk gets the Np tokens ``cube[i]``, appended after ``ln_pre`` without positional embedding.
- **Switch**: before the self-attention of every layer, the LayerNorm-ed prompt tokens are transposed between
  the frame axis and the prompt-slot axis of the chunk (the residual stream is not), so frame f attends to
  slot f of every frame of its chunk: the only path between frames.
- **Prompt Aggregation**: each frame's final CLS token attends over the chunk's Np x Np final prompt tokens
  (``nn.MultiheadAttention`` whose output projection starts at zero), residual, then ``ln_post`` and ``proj``.
  The prompt tokens are then dropped; the video embedding is the mean of the L2-normalised frame embeddings
  (computed once per video: it never sees the text).
- **Captioner** (training only): a 2-layer post-norm ``nn.TransformerDecoder`` over the frame embeddings,
  teacher-forced on the caption (CLIP's token + position embedding, no gradient, then a LayerNorm), head
  initialised from CLIP's token embedding, cross-entropy with frequent words down-weighted, weight 0.5.

Frames are grouped into chunks per video, never across videos (the official code regroups the flattened batch,
so a frame count other than the model's mixes videos; see docs/methods/promptswitch.md). A frame count that is
not a multiple of Np is refused, as the official ``train.py`` asserts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vtp_bench.config import choice
from vtp_bench.errors import InputShapeError
from vtp_bench.losses import global_mean
from vtp_bench.methods.base import Embeddings, Reported
from vtp_bench.methods.clip4clip import Clip4Clip, Clip4ClipConfig
from vtp_bench.models.clip_common import hf_clip_to_open_clip
from vtp_bench.models.layouts import CheckpointLayout, LayoutMap
from vtp_bench.models.outputs import EncoderOutput
from vtp_bench.models.video.clip_vit import ClipLayerHook
from vtp_bench.registry import CHECKPOINT_LAYOUTS, METHODS

# The official CaptionLoss down-weights the tokens of these words and both special tokens (HF CLIPTokenizer of
# openai/clip-vit-base-patch32; the same BPE vocabulary as open_clip's): 19 ids.
FREQUENT_WORDS = "in on of to about this that a an the and there here is are . ,"
CHUNKINGS = ("strided", "contiguous")
AGGREGATION_LRS = ("clip", "new")


class PromptCubeHook(ClipLayerHook):
    """The Prompt Cube, the switch and the Prompt Aggregation through clip_vit's per-layer hook. Frames arrive
    chunk-major: rows ``c * Np .. c * Np + Np - 1`` of the flattened [B * T] batch are one chunk."""

    def __init__(self, cube: Tensor, aggregation: nn.MultiheadAttention | None, switch: bool = True) -> None:
        self.cube, self.aggregation, self.switch = cube, aggregation, switch
        self.n = cube.shape[0]

    def extra_tokens(self, x: Tensor, frames: int) -> Tensor:
        n, w = self.n, x.shape[-1]
        prompts = self.cube.to(x.dtype)[None].expand(x.shape[0] // n, n, n, w).reshape(x.shape[0], n, w)
        return torch.cat([x, prompts], dim=1)

    def attn_input(self, layer: int, h: Tensor, frames: int) -> Tensor:
        if not self.switch:
            return h
        n = self.n
        h = h.reshape(-1, n, *h.shape[1:])  # [chunks, frame in chunk, L + Np, W]
        switched = h[:, :, -n:].transpose(1, 2)  # the input at (frame f, slot j) is LN(h[frame j, slot f])
        return torch.cat([h[:, :, :-n], switched], dim=2).flatten(0, 1)

    def frame_feature(self, hidden: Tensor, frames: int) -> Tensor:
        cls = hidden[:, 0]
        if self.aggregation is None:
            return cls
        n, w = self.n, hidden.shape[-1]
        q = cls.reshape(-1, n, w)  # the chunk's CLS tokens query all of its Np * Np raw prompt outputs
        kv = hidden[:, -n:].reshape(-1, n * n, w)
        out = self.aggregation(q, kv, kv, need_weights=False)[0]
        return (q + out).reshape(-1, w)


class Captioner(nn.Module):
    """The official captioning branch: memory = per-frame embeddings (projected, not normalised); target = the
    caption's CLIP embedding (token + position) -> LayerNorm -> causal post-norm decoder -> vocabulary head.
    ``memory_proj`` exists only when the embedding size differs from the text width (not at ViT-B/32, where
    the official code, built with the text width, works only because both are 512)."""

    def __init__(self, width: int, heads: int, ff: int, layers: int, vocab: int, memory_dim: int) -> None:
        super().__init__()
        self.memory_proj = nn.Linear(memory_dim, width) if memory_dim != width else None
        self.prenorm = nn.LayerNorm(width)
        layer = nn.TransformerDecoderLayer(width, heads, ff, dropout=0.0, batch_first=True)  # ReLU, post-norm
        self.decoder = nn.TransformerDecoder(layer, layers, norm=nn.LayerNorm(width))
        self.head = nn.Linear(width, vocab)

    def forward(self, target: Tensor, memory: Tensor, memory_pad: Tensor | None = None) -> Tensor:
        """target [B, L, width] embedded tokens, memory [B, T, memory_dim] -> hidden states [B, L, width]."""
        if self.memory_proj is not None:
            memory = self.memory_proj(memory)
        n = target.shape[1]
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=target.device), diagonal=1)
        return self.decoder(self.prenorm(target), memory, tgt_mask=causal, tgt_is_causal=True,
                            memory_key_padding_mask=memory_pad)


def chunk_order(frames: int, n: int, chunking: str) -> Tensor:
    """Positions of the temporally ordered frames in chunk-major order. ``strided``: chunk c holds frames c,
    c + C, c + 2C, ... (C = frames / Np), so every chunk spans the whole video in temporal order, the layout
    of the official sampler (C passes over Np segments); ``contiguous``: chunk c holds frames c*Np .. c*Np+Np-1."""
    order = torch.arange(frames)
    if chunking == "strided":
        order = order.reshape(n, frames // n).t().reshape(-1)
    return order


def repeat_last_real(video: Tensor, mask: Tensor) -> Tensor:
    """Padded frames (mask False) replaced by the latest real frame before them (the first real frame if none):
    the official loader pads short videos by repeating the last frame, so a chunk never switches prompts with
    an empty frame. [B, T, ...], [B, T] bool."""
    t = mask.shape[1]
    pos = torch.arange(t, device=mask.device).expand_as(mask)
    idx = torch.where(mask, pos, torch.full_like(pos, -1)).cummax(dim=1).values
    idx = torch.where(idx < 0, mask.int().argmax(dim=1, keepdim=True).expand_as(idx), idx)
    return torch.gather(video, 1, idx.reshape(*idx.shape, *([1] * (video.ndim - 2))).expand_as(video))


@dataclass
class PromptSwitchConfig(Clip4ClipConfig):
    name: str = "promptswitch"
    max_words: int = 77  # HF CLIPTokenizer(truncation=True): CLIP's context
    num_prompts: int = 6  # Np; frames per chunk and prompts per frame. 0: no prompt tokens (= clip4clip)
    prompt_init_std: Optional[float] = None  # null: width**-0.5 * 0.02 (official code); summaries of the paper: 0.02
    switch: bool = True  # ablation: false keeps each frame's prompts on that frame (no path between frames)
    aggregation: bool = True  # ablation: false takes the frame's CLS token as in CLIP
    chunking: str = choice("strided", CHUNKINGS)  # how temporally ordered frames form chunks (chunk_order)
    new_lr: float = 1.0e-5  # official noclip_lr: cube, captioner (optim.lr is the CLIP lr, official clip_lr 1e-6)
    aggregation_lr: str = choice("clip", AGGREGATION_LRS)  # official: the aggregation MHA trains at the CLIP lr
    caption_weight: float = 0.5  # official caption_loss_mult; 0: no captioner is built
    captioner_layers: int = 2
    frequent_word_weight: float = 0.25


# the official PromptCLIP's own parts -> ours (the CLIP towers under ``clip.`` are HuggingFace CLIP's names)
OFFICIAL_PARTS = {"clip.vision_model.encoder.prompt_embedding": "prompt_cube", "clip.vision_model.attn.":
                  "prompt_aggregation.", "caption_prenorm.": "captioner.prenorm.", "caption_transformer.":
                  "captioner.decoder.", "caption_head.": "captioner.head."}
PROMPT_PARTS = ("prompt_cube", "prompt_aggregation.", "captioner.")


@CHECKPOINT_LAYOUTS.register("promptswitch")
class PromptSwitchLayout(CheckpointLayout):
    """The official ``PromptCLIP`` checkpoint (``checkpoint["state_dict"]``): HuggingFace CLIP under ``clip.``
    (``clip.vision_model.*``, ``clip.text_model.*``, the projections, ``clip.logit_scale``), the Prompt Cube
    (``clip.vision_model.encoder.prompt_embedding`` [Np, Np, W]), the Prompt Aggregation MHA
    (``clip.vision_model.attn.*``, the same parameters as ours) and the captioner (``caption_prenorm``,
    ``caption_transformer`` = ``nn.TransformerDecoder`` as ours, ``caption_head``). Normalised to open_clip's names
    for the towers and to this method's names for the rest."""

    keys, priority = "open_clip", 90

    def recognises(self, sd: Mapping[str, Any]) -> bool:
        return any(k.startswith(("clip.vision_model.", "clip.text_model.")) for k in sd)

    def normalise(self, sd: Mapping[str, Any]) -> dict[str, Any]:
        from vtp_bench.models.checkpoints import CheckpointError

        if any(k.startswith("pool_frames.") for k in sd):
            raise CheckpointError("this Prompt Switch file was trained with --pooling_type transformer (pool_frames.*,"
                                  " a text-conditioned frame pooling); vtp_bench's promptswitch is the 'avg' model")
        ours, towers = {}, {}
        for key, value in sd.items():
            src = next((p for p in OFFICIAL_PARTS if key.startswith(p)), None)
            if src is not None:
                ours[OFFICIAL_PARTS[src] + key[len(src):]] = value
            elif key.startswith("clip."):
                towers[key[len("clip."):]] = value
            else:
                ours[key] = value  # no place here: reported (or refused when strict)
        return {**hf_clip_to_open_clip(towers), **ours}


@METHODS.register("promptswitch")
class PromptSwitch(Clip4Clip):
    Config = PromptSwitchConfig
    reported = (  # ViT-B/32, as quoted by TAME (docs/methods/promptswitch.md)
        Reported("msrvtt_1ka", "fine-tuned", {"t2v/R@1": 47.8, "t2v/R@5": 73.9, "t2v/R@10": 82.2, "t2v/MeanR": 14.1,
                                              "v2t/R@1": 46.0, "v2t/R@5": 74.3, "v2t/R@10": 84.8, "v2t/MeanR": 8.5},
                 "Prompt Switch (ViT-B/32), as quoted by TAME", 1000),
        Reported("msvd", "fine-tuned", {"t2v/R@1": 47.1, "t2v/R@5": 76.9, "t2v/R@10": 86.1, "t2v/MeanR": 9.5},
                 "Prompt Switch (ViT-B/32), as quoted by TAME", 27763),
        Reported("lsmdc", "fine-tuned", {"t2v/R@1": 23.1, "t2v/R@5": 41.7, "t2v/R@10": 50.5, "t2v/MeanR": 56.8},
                 "Prompt Switch (ViT-B/32), as quoted by TAME", 1000),
    )

    def __init__(self, cfg: Any, loss_gather: str = "global") -> None:
        super().__init__(cfg, loss_gather)
        if cfg.num_prompts < 0:
            raise ValueError(f"method.num_prompts must be >= 0, got {cfg.num_prompts}")
        visual = self.video_model.visual
        width = visual.transformer.width
        self.prompt_cube: nn.Parameter | None = None
        self.prompt_aggregation: nn.MultiheadAttention | None = None
        if cfg.num_prompts > 0:
            std = cfg.prompt_init_std if cfg.prompt_init_std is not None else width**-0.5 * 0.02
            self.prompt_cube = nn.Parameter(torch.randn(cfg.num_prompts, cfg.num_prompts, width) * std)
            if cfg.aggregation:
                heads = visual.transformer.resblocks[0].attn.num_heads
                self.prompt_aggregation = nn.MultiheadAttention(width, heads, batch_first=True)
                nn.init.zeros_(self.prompt_aggregation.out_proj.weight)
                nn.init.zeros_(self.prompt_aggregation.out_proj.bias)
        self.captioner: Captioner | None = None
        if cfg.caption_weight > 0:
            self._build_captioner(cfg)

    def checkpoint_prefixes(self, layout: CheckpointLayout) -> LayoutMap | None:
        """CLIP's towers and ``logit_scale`` (Clip4Clip), plus the Prompt Cube, the aggregation and the captioner
        when the file has them (an official Prompt Switch file); a plain CLIP file leaves them as built."""
        found = super().checkpoint_prefixes(layout)
        if layout.keys != "open_clip" or found is None:
            return found
        return LayoutMap({**found.prefixes, **{p: p for p in PROMPT_PARTS}}, optional=PROMPT_PARTS,
                         derived=("captioner_head_copied",))

    def after_official_load(self, loaded: list[str]) -> list[str]:
        """A file with a trained captioner head keeps it: the copy of the token embedding that a fresh model makes
        before its first step (the official constructor's init) is marked done."""
        if self.captioner is None or "captioner.head.weight" not in loaded:
            return []
        self.captioner_head_copied.fill_(True)
        return ["promptswitch: the captioner head comes from the file (not re-initialised from the token embedding)"]

    def _build_captioner(self, cfg: Any) -> None:
        text = self.text_model.text
        block = text.transformer.resblocks[0]
        vocab = text.token_embedding.num_embeddings
        self.captioner = Captioner(text.width, block.attn.num_heads, block.mlp.c_fc.out_features,
                                   cfg.captioner_layers, vocab, self.video_model.width)
        nn.init.zeros_(self.captioner.head.bias)
        # the head starts as CLIP's token embedding; copied again before the first training step, so that weights
        # loaded after construction (init.checkpoint) are the ones copied, as in the official code
        self.register_buffer("captioner_head_copied", torch.tensor(False))
        self._copy_token_embedding()
        from open_clip.tokenizer import SimpleTokenizer

        tok = SimpleTokenizer()
        ids = tok.encode(FREQUENT_WORDS) + [tok.sot_token_id, tok.eot_token_id]
        weight = torch.ones(vocab)
        weight[[i for i in ids if i < vocab]] = cfg.frequent_word_weight
        self.register_buffer("caption_class_weight", weight, persistent=False)

    def _copy_token_embedding(self) -> None:
        with torch.no_grad():
            self.captioner.head.weight.copy_(self.text_model.text.token_embedding.weight)  # type: ignore[union-attr]

    # --- video ----------------------------------------------------------------------------------------
    def encode_frames(self, video: Tensor, mask: Tensor | None) -> tuple[EncoderOutput, Tensor]:
        """The tower's output with the Prompt Cube, frames in chunk-major order, and the permuted frame mask."""
        b, t = video.shape[:2]
        n = self.cfg.num_prompts
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=video.device)
        mask = mask.bool()
        if n == 0:
            return self.video_model(self.pixels(video), mask), mask
        if t % n:
            raise InputShapeError(
                f"promptswitch: {t} frames per video is not a multiple of method.num_prompts={n}. The Prompt Cube "
                f"switches prompts inside chunks of num_prompts frames (the official train.py asserts num_frames % "
                f"num_prompts == 0): set data.num_frames (and data.eval_num_frames) to a multiple of {n}")
        video = self.pixels(video)
        if not bool(mask.all()):
            video = repeat_last_real(video, mask)
        order = chunk_order(t, n, self.cfg.chunking).to(video.device)
        hook = PromptCubeHook(self.prompt_cube, self.prompt_aggregation, self.cfg.switch)  # type: ignore[arg-type]
        return self.video_model(video[:, order], mask[:, order], hook=hook), mask[:, order]

    def encode_video(self, batch: dict[str, Any]) -> Embeddings:
        out, _ = self.encode_frames(batch["video"], batch.get("video_mask"))
        return Embeddings(pooled=out.pooled)

    # --- training -------------------------------------------------------------------------------------
    def losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        ids = self.tokens(batch["text"])
        out, mask = self.encode_frames(batch["video"], batch.get("video_mask"))
        terms = self.contrastive(self.text_model(ids).pooled, out.pooled)
        if self.captioner is not None:
            if not bool(self.captioner_head_copied):
                self._copy_token_embedding()
                self.captioner_head_copied.fill_(True)
            terms["caption"] = self.cfg.caption_weight * self.caption_loss(out.frames, mask, ids)
        return terms

    def caption_loss(self, frames: Tensor, frame_mask: Tensor, ids: Tensor) -> Tensor:
        """Teacher-forced cross-entropy of the official ``CaptionLoss``: the weighted mean over the predicted
        positions (every position before the caption's <eot>, i.e. the words and the <eot> itself) of
        ``weight[target] * CE`` / ``weight[target]``. Padding is excluded by position, whatever its id (open_clip
        pads with 0, which is also the id of "!"; HF's tokenizer pads with <eot>). With ``loss.gather=global``
        the denominator is summed over ranks, so DDP's gradient is that of the global batch."""
        assert self.captioner is not None
        inp, target = ids[:, :-1], ids[:, 1:]
        keep = torch.arange(inp.shape[1], device=ids.device)[None, :] < ids.argmax(dim=-1)[:, None]
        text = self.text_model.text
        with torch.no_grad():
            embedded = text.token_embedding(inp) + text.positional_embedding[: inp.shape[1]]
        hidden = self.captioner(embedded.to(frames.dtype), frames, ~frame_mask)
        logits = self.captioner.head(hidden[keep]).float()
        target = target[keep]
        w = self.caption_class_weight[target].to(logits.dtype)
        num = (w * F.cross_entropy(logits, target, reduction="none")).sum()
        return global_mean(num, w.sum(), self.loss_gather, min_count=None)  # weights may sum below 1

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """CLIP's parameters (towers, logit scale; by default also the aggregation MHA, as in the official code
        where its name matches none of 'prompt' / 'caption' / 'pool') at ``optim.lr``, the new ones at
        ``method.new_lr``; each set split by ``optim.decay_groups``."""
        from vtp_bench.optim import decay_groups

        new_prefixes = ("prompt_cube", "captioner.")
        if self.cfg.aggregation_lr == "new":
            new_prefixes += ("prompt_aggregation.",)
        names = [n for n, _ in self.named_parameters()]
        new = [n for n in names if n.startswith(new_prefixes)]
        clip = [n for n in names if n not in set(new)]
        return decay_groups(self, lr, weight_decay, clip) + decay_groups(self, self.cfg.new_lr, weight_decay, new)
