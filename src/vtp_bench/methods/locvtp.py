"""LocVTP (Cao et al., ECCV 2022): localization-oriented video-text pre-training on the shared ViT backbone.

A video of ``T`` frames is split into ``num_clips`` clips of ``T / num_clips`` consecutive frames; every clip is
encoded on its own by the video tower (as the official code's C3D feature extraction does), projected, and the
video embedding is the mean of its clip embeddings. Losses (docs/methods/locvtp.md lists every
deviation from the official code and every unverified choice):

- ``coarse_*``: video-sentence InfoNCE (NormSoftmax, both directions, negatives from every rank);
- ``fine_c2w``: clip-word correspondence discovery: each clip's ``top_k_words`` most similar words of its own
  caption (padding and special tokens excluded) are its positives; negatives by ``negatives``;
- ``fine_w2c`` (``word_to_clip``): each word's most similar clip of its own video is its positive;
- ``temporal_c2w`` / ``temporal_w2c``: the context projection head warps a context clip j by its temporal
  offset to a reference clip i; the warped feature must match i's discovered words (and they it);
- ``splice`` (optional, ``splice_weight > 0``): predict where a video's clips switch to another video's.

Local features travel in ``Embeddings.tokens``/``mask`` (clips for videos, words for texts), so retrieval and
grounding evaluation use the generic seam; ``retrieval_score`` picks coarse or coarse + clip-word scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vtp_bench.config import choice
from vtp_bench.errors import InputShapeError
from vtp_bench.losses import gather_with_grad, global_mean, norm_softmax_loss
from vtp_bench.methods.base import Embeddings, Method, Reported, cosine_similarity_matrix, t2v
from vtp_bench.models.build import build_encoder
from vtp_bench.models.layouts import CheckpointLayout, LayoutMap
from vtp_bench.registry import METHODS

NEGATIVES = ("sentence", "batch", "both")
CONTEXT_HEADS = ("residual", "additive")
OFFSET_UNITS = ("clips", "seconds")
RETRIEVAL_SCORES = ("coarse", "coarse+fine")
OFFSET_SIGNS = ("reference_minus_context", "context_minus_reference")  # the latter: the official delta
COARSE_DIRECTIONS = ("sum", "mean")  # t2v + v2t (Frozen's NormSoftmax) | their mean (the official ClipLoss)
OFFSET_HEADS = ("shared", "separate")  # one context head | one per direction (official: word- and clip-side)
_SIM_CHUNK = 128  # texts / videos per block of the fine-grained retrieval score


@dataclass
class LocVTPConfig:
    name: str = "locvtp"
    # paper's retrieval variant: ViT-B/16 "following OA-Trans" (issue #1); the encoder's num_frames is the
    # number of frames of ONE clip (data.num_frames = num_clips x frames per clip)
    video: dict[str, Any] = field(
        default_factory=lambda: {"name": "space_time_vit", "preset": "base", "num_frames": 4, "time_init": "zeros"}
    )
    text: dict[str, Any] = field(default_factory=lambda: {"name": "hf_text", "preset": "distilbert-base"})
    embed_dim: int = 256  # official ProjectionHead(in, 256)
    proj_dropout: float = 0.1  # official ProjectionHead dropout
    num_clips: int = 5  # official NUM_SEGMENTS (5 x 16 frames)
    coarse_temperature: float = 0.05  # [UNVERIFIED]; official: soft-target loss at T = 1 on unnormalised features
    fine_temperature: float = 0.07  # official FGLoss.NCE
    top_k_words: int = 1  # official argmax (top-1); the paper's K is unverified
    negatives: str = choice("sentence", NEGATIVES)  # sentence: other words/clips of the pair (official) | batch | both
    word_to_clip: bool = True  # the word -> clip direction of the fine and temporal terms (official code has it)
    context_head: str = choice("residual", CONTEXT_HEADS)  # residual: identity at offset 0 | additive (official)
    context_hidden: int = 256
    context_window: int = 0  # max |offset| in clips between a context and its reference clip; 0 = all clips
    offset_unit: str = choice("clips", OFFSET_UNITS)  # clips: offset / clip spacing (from frame times) | seconds
    offset_sign: str = choice("reference_minus_context", OFFSET_SIGNS)  # official: context minus reference
    offset_heads: str = choice("shared", OFFSET_HEADS)  # separate: a second head warps the word -> clip positives
    coarse_directions: str = choice("sum", COARSE_DIRECTIONS)  # mean: half the weight (the official ClipLoss)
    coarse_weight: float = 1.0
    fine_weight: float = 10.0  # official FGWEIGHT
    temporal_weight: float = 10.0  # official FGWEIGHT (the shifted terms share it)
    splice_weight: float = 0.0  # official SHIFTWEIGHT 1; off unless set (not among the paper's named parts)
    retrieval_score: str = choice("coarse", RETRIEVAL_SCORES)  # coarse: cosine of pooled (official eval)
    fine_score_weight: float = 1.0  # weight of the clip-word score in retrieval_score=coarse+fine


class ProjectionHead(nn.Module):
    """The official head: ``p = Linear(x)``; ``LayerNorm(p + Dropout(Linear(GELU(p))))`` (not L2-normalised)."""

    def __init__(self, width: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.projection = nn.Linear(width, dim)
        self.fc = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        p = self.projection(x)
        return self.layer_norm(p + self.dropout(self.fc(F.gelu(p))))


class ContextHead(nn.Module):
    """Warps a context clip's feature ``v`` [..., D] by its offset ``delta`` [...] (reference minus context).

    ``residual``: ``v + f([v, delta]) - f([v, 0])`` with a two-layer MLP ``f`` (no output bias), so the warp is exactly
    the
    identity at offset 0 and depends on the offset elsewhere. ``additive`` (the official code's only offset
    machinery): ``v + Linear(sign delta) + Linear(|delta|)``, not the identity at 0 (the biases remain).
    """

    def __init__(self, kind: str, dim: int, hidden: int) -> None:
        super().__init__()
        self.kind = kind
        self.identity_at_zero = kind == "residual"
        if kind == "residual":
            # no output bias: it cancels in f([v, delta]) - f([v, 0]) and would never train
            self.mlp = nn.Sequential(nn.Linear(dim + 1, hidden), nn.GELU(), nn.Linear(hidden, dim, bias=False))
        elif kind == "additive":
            self.sign_proj = nn.Linear(1, dim)
            self.dist_proj = nn.Linear(1, dim)
        else:
            raise ValueError(f"method.context_head must be one of {CONTEXT_HEADS}, got {kind!r}")

    def forward(self, v: Tensor, delta: Tensor) -> Tensor:
        d = delta.to(v.dtype)[..., None]
        if self.kind == "additive":
            return v + self.sign_proj(torch.sign(d)) + self.dist_proj(d.abs())
        return v + (self.mlp(torch.cat([v, d], -1)) - self.mlp(torch.cat([v, torch.zeros_like(d)], -1)))


def word_mask(mask: Tensor) -> Tensor:
    """Real word positions: the text encoder's token mask without each row's first and last real token (the
    [CLS]/[SEP] of BERT-style tokenizers, <start_of_text>/<end_of_text> of CLIP's; padding is already False)."""
    mask = mask.bool()
    n = mask.sum(dim=1, keepdim=True)
    pos = torch.cumsum(mask.long(), dim=1) - 1  # 0-based index among the real tokens
    return mask & (pos > 0) & (pos < n - 1)


def _softplus_nce(pos_logits: Tensor, neg_lse: Tensor) -> Tensor:
    """-log(e^p / (e^p + sum_n e^n)) = softplus(logsumexp(n) - p); 0 when there is no negative (lse = -inf)."""
    return F.softplus(neg_lse - pos_logits)


def _masked_lse(logits: Tensor, mask: Tensor) -> Tensor:
    """logsumexp over the masked entries; -inf for a row without any, with a finite (zero) gradient there."""
    some = mask.any(-1, keepdim=True)
    safe = logits.masked_fill(~mask, -math.inf).masked_fill(~some, 0.0)
    lse = torch.logsumexp(safe, dim=-1)
    return torch.where(some.squeeze(-1), lse, torch.full_like(lse, -math.inf))


def _fp32(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


@METHODS.register("locvtp")
class LocVTP(Method):
    Config = LocVTPConfig
    reported = (Reported("msrvtt_1ka", "fine-tuned", t2v(36.5, 64.3, 76.8, 3.0),
                         "LocVTP (ViT-B/16, WebVid-2M + CC3M), as quoted by the SimVTP README", 1000),)

    def __init__(self, cfg: Any, loss_gather: str = "global") -> None:
        super().__init__(cfg, loss_gather)
        if cfg.num_clips < 1 or cfg.top_k_words < 1:
            raise ValueError("method.num_clips and method.top_k_words must be >= 1")
        self.video_model = build_encoder(cfg.video, "method.video")
        self.text_model = build_encoder(cfg.text, "method.text")
        self.vid_proj = ProjectionHead(self.video_model.width, cfg.embed_dim, cfg.proj_dropout)
        self.txt_proj = ProjectionHead(self.text_model.width, cfg.embed_dim, cfg.proj_dropout)  # sentence + words
        self.context = ContextHead(cfg.context_head, cfg.embed_dim, cfg.context_hidden)
        # the official code has word-side and clip-side offset layers; here the second head, when asked for,
        # warps the context clips that become a word's positives (the word -> clip direction)
        self.context_w2c = (ContextHead(cfg.context_head, cfg.embed_dim, cfg.context_hidden)
                            if cfg.offset_heads == "separate" and cfg.word_to_clip else None)
        if cfg.splice_weight > 0:
            if cfg.num_clips < 2:
                raise ValueError("method.splice_weight > 0 needs method.num_clips >= 2 (a splice point between clips)")
            self.splice_head = nn.Linear(cfg.num_clips * cfg.embed_dim, cfg.num_clips - 1)
            self.register_buffer("splice_calls", torch.zeros((), dtype=torch.long))  # same draws on every rank
        self._stats: dict[str, Tensor] = {}

    @classmethod
    def data_inputs(cls, cfg: Any) -> frozenset[str]:
        """The clip and where its frames sit in time (``frame_times``: the offsets between clips)."""
        return frozenset({"video", "frame_times"})

    # --- encoders -------------------------------------------------------------------------------------
    def checkpoint_prefixes(self, layout: CheckpointLayout) -> LayoutMap | None:
        """No LocVTP weights were released. Its retrieval variant is a Frozen / OA-Trans-style ViT-B/16, so a
        Frozen-layout file (Frozen-in-Time, MILES, an OA-Trans ViT) initialises both towers; the file's
        projections do not fit LocVTP's heads and are left unused (reported), the heads stay as built."""
        if layout.keys != "frozen":
            return super().checkpoint_prefixes(layout)
        return LayoutMap(self.tower_prefixes(layout, "video_model", "text_model"), unused=("vid_proj.", "txt_proj."))

    def clip_positions(self, batch: dict[str, Any], clip_mask: Tensor) -> Tensor:
        """[B, C] clip positions in ``offset_unit``: the mean time of a clip's real frames (``frame_times``),
        in seconds or divided by the item's mean clip spacing; the clip index when times are absent."""
        b, c = clip_mask.shape
        index = torch.arange(c, dtype=torch.float64, device=clip_mask.device).expand(b, c)
        times = batch.get("frame_times")
        if times is None or not torch.isfinite(times).all():
            if self.cfg.offset_unit == "seconds":
                raise ValueError("method.offset_unit=seconds needs the batch's frame_times (finite); use clips")
            return index
        fm = batch.get("video_mask")
        t = times.to(clip_mask.device, torch.float64).reshape(b, c, -1)
        m = (torch.ones_like(t, dtype=torch.bool) if fm is None else fm.reshape(b, c, -1).bool()).to(t.dtype)
        clip_t = (t * m).sum(-1) / m.sum(-1).clamp_min(1)
        if self.cfg.offset_unit == "seconds":
            return clip_t
        n = clip_mask.sum(1, keepdim=True)
        first = clip_t[:, :1]
        last = clip_t.gather(1, (n - 1).clamp_min(0))
        spacing = (last - first) / (n - 1).clamp_min(1)
        ok = (n > 1) & (spacing > 0)
        return torch.where(ok, (clip_t - first) / torch.where(ok, spacing, torch.ones_like(spacing)), index)

    def encode_clips(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Projected clip embeddings [B, C, D] and the clip mask [B, C] (a clip with no real frame is padding)."""
        video = batch["video"]
        b, t = video.shape[:2]
        c = self.cfg.num_clips
        if t % c:
            raise InputShapeError(f"data.num_frames = {t} frames cannot be split into method.num_clips = {c} equal "
                                  "clips; "
                             f"set data.num_frames to a multiple of {c}")
        frame_mask = batch.get("video_mask")
        if frame_mask is None:
            frame_mask = torch.ones(b, t, dtype=torch.bool, device=video.device)
        f = t // c
        out = self.video_model(video.reshape(b * c, f, *video.shape[2:]), frame_mask.reshape(b * c, f))
        return self.vid_proj(out.pooled).reshape(b, c, -1), frame_mask.reshape(b, c, f).any(-1)

    def encode_video(self, batch: dict[str, Any]) -> Embeddings:
        clips, mask = self.encode_clips(batch)
        m = mask.to(clips.dtype)[..., None]
        pooled = (clips * m).sum(1) / m.sum(1).clamp_min(1)
        extra = {}
        if batch.get("frame_times") is not None:  # where each clip sits in the video (grounding)
            ft = batch["frame_times"].to(clips.device).reshape(*mask.shape, -1)
            extra["clip_times"] = ft.mean(-1)
        return Embeddings(pooled=pooled, tokens=clips, mask=mask, extra=extra)

    def encode_text(self, batch: dict[str, Any]) -> Embeddings:
        out = self.text_model(batch["text"])
        return Embeddings(pooled=self.txt_proj(out.pooled), tokens=self.txt_proj(out.tokens), mask=word_mask(out.mask))

    def similarity(self, text: Embeddings, video: Embeddings) -> Tensor:
        coarse = cosine_similarity_matrix(text.pooled.float(), video.pooled.float())
        if self.cfg.retrieval_score == "coarse":
            return coarse
        return coarse + self.cfg.fine_score_weight * clip_word_score(text, video)

    # --- losses ---------------------------------------------------------------------------------------
    def _mean(self, total: Tensor, count: Tensor) -> Tensor:
        """``total / count`` over the global batch (gather=global): DDP's average of the per-rank values then
        equals the single-process mean; per-rank mean with gather=none."""
        return global_mean(total, count, self.loss_gather)

    def losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        cfg = self.cfg
        clips, clip_mask = self.encode_clips(batch)
        text = self.encode_text(batch)
        m = clip_mask.to(clips.dtype)[..., None]
        video = (clips * m).sum(1) / m.sum(1).clamp_min(1)
        nce = norm_softmax_loss(text.pooled, video, cfg.coarse_temperature, self.loss_gather)
        cw = cfg.coarse_weight * (0.5 if cfg.coarse_directions == "mean" else 1.0)
        terms = {"coarse_t2v": cw * nce["t2v"], "coarse_v2t": cw * nce["v2t"]}
        pos = self.clip_positions(batch, clip_mask)
        terms.update(self._fine_and_temporal(clips, clip_mask, text.tokens, text.mask, pos))
        if cfg.splice_weight > 0:
            terms["splice"] = cfg.splice_weight * self._splice(clips, clip_mask)
        return terms

    def _word_bank(self, words: Tensor, wmask: Tensor, offset: int, batch_negatives: bool) -> tuple[Tensor, Tensor]:
        """The words a clip is contrasted with, flattened [N, D], and their caption's (global) index [N]."""
        owner = torch.arange(words.shape[0], device=words.device)[:, None].expand_as(wmask)[wmask]
        flat = words[wmask]
        if not batch_negatives:
            return flat, owner
        g = gather_with_grad(flat, self.loss_gather)
        o = gather_with_grad((owner + offset).to(torch.float64), self.loss_gather)
        return g.all, o.all.round().long()

    def _fine_and_temporal(self, clips: Tensor, clip_mask: Tensor, words: Tensor, wmask: Tensor,
                           pos: Tensor) -> dict[str, Tensor]:
        cfg = self.cfg
        b, c, _ = clips.shape
        tau = cfg.fine_temperature
        batch_neg = cfg.negatives in ("batch", "both")
        same_neg = cfg.negatives in ("sentence", "both")
        v = F.normalize(_fp32(clips), dim=-1)
        w = F.normalize(_fp32(words), dim=-1)
        vg = gather_with_grad(v, self.loss_gather) if batch_neg else None
        offset = vg.offset if vg is not None else 0
        own_id = torch.arange(b, device=v.device) + offset  # global caption / video index of the local rows

        # clip -> word: rows = local clips, columns = the word bank
        bank, owner = self._word_bank(w, wmask, offset, batch_neg)
        logits = torch.einsum("bcd,nd->bcn", v, bank) / tau  # [B, C, N]
        own = owner[None, None, :] == own_id[:, None, None]  # [B, 1, N]
        row_ok = clip_mask[..., None]
        with torch.no_grad():  # correspondence discovery: the top-k words of the clip's own caption
            k = min(cfg.top_k_words, bank.shape[0]) if bank.shape[0] else 0
            positive = torch.zeros_like(logits, dtype=torch.bool)
            if k:
                own_logits = logits.detach().masked_fill(~own, -math.inf)
                top = own_logits.topk(k, dim=-1)
                positive.scatter_(-1, top.indices, torch.isfinite(top.values))
            positive &= own & row_ok
        negative = torch.zeros_like(positive)
        if same_neg:
            negative |= own & ~positive
        if batch_neg:
            negative |= ~own
        negative &= row_ok
        neg_lse = _masked_lse(logits, negative)  # [B, C]
        per = _softplus_nce(logits, neg_lse[..., None])
        terms = {"fine_c2w": cfg.fine_weight * self._mean((per * positive).sum(), positive.sum())}
        self._stats = {"matched_words_per_clip": positive.sum(-1)[clip_mask].float().mean().detach()}

        # the context projection head: every ordered pair (reference i, context j != i) of real clips
        delta = pos[:, :, None] - pos[:, None, :]  # [B, C_ref, C_ctx], reference minus context
        if cfg.offset_sign == "context_minus_reference":
            delta = -delta
        pair = clip_mask[:, :, None] & clip_mask[:, None, :] & ~torch.eye(c, dtype=torch.bool, device=v.device)
        if cfg.context_window > 0:
            idx = torch.arange(c, device=v.device)
            pair &= (idx[:, None] - idx[None, :]).abs() <= cfg.context_window
        warped = _fp32(self.context(clips[:, None, :, :].expand(b, c, c, -1), delta))  # [B, C_ref, C_ctx, D]
        z = F.normalize(warped, dim=-1)
        z_logits = torch.einsum("bijd,nd->bijn", z, bank) / tau
        z_pos = positive[:, :, None, :] & pair[..., None]
        z_lse = _masked_lse(z_logits, negative[:, :, None, :].expand_as(z_logits))  # the reference clip's negatives
        per = _softplus_nce(z_logits, z_lse[..., None])
        terms["temporal_c2w"] = cfg.temporal_weight * self._mean((per * z_pos).sum(), z_pos.sum())
        if not cfg.word_to_clip:
            return terms

        # word -> clip: rows = local real words, columns = the clip bank
        wl = w[wmask]  # [Nw, D]
        w_owner = torch.arange(b, device=v.device)[:, None].expand_as(wmask)[wmask]
        cbank = (vg.all if batch_neg else v).reshape(-1, v.shape[-1])  # [B_bank * C, D]
        cvalid = (gather_with_grad(clip_mask.to(torch.float64), self.loss_gather).all > 0.5 if batch_neg
                  else clip_mask).reshape(-1)
        c_owner = torch.arange(cbank.shape[0], device=v.device) // c
        wl_logits = wl @ cbank.t() / tau  # [Nw, B_bank * C]
        c_own = (c_owner[None, :] == (w_owner + offset)[:, None]) & cvalid[None, :]
        with torch.no_grad():
            best = wl_logits.detach().masked_fill(~c_own, -math.inf).argmax(-1)  # the word's clip in its video
            has = c_own.any(-1)
        wpos = F.one_hot(best, cbank.shape[0]).bool() & has[:, None]
        wneg = torch.zeros_like(wpos)
        if same_neg:
            wneg |= c_own & ~wpos
        if batch_neg:
            wneg |= ~c_own & cvalid[None, :]
        w_lse = _masked_lse(wl_logits, wneg)
        per = _softplus_nce(wl_logits, w_lse[:, None])
        terms["fine_w2c"] = cfg.fine_weight * self._mean((per * wpos).sum(), wpos.sum())

        # the word's positive becomes a context clip warped to its matched clip (reference i = best % C)
        ref = best % c
        if self.context_w2c is not None:  # the word-side head: its own warp of the same pairs
            z = F.normalize(_fp32(self.context_w2c(clips[:, None, :, :].expand(b, c, c, -1), delta)), dim=-1)
        zw = z[w_owner, ref]  # [Nw, C_ctx, D]
        zpos_ok = pair[w_owner, ref] & has[:, None]
        zl = torch.einsum("nd,njd->nj", wl, zw) / tau
        per = _softplus_nce(zl, w_lse[:, None])
        terms["temporal_w2c"] = cfg.temporal_weight * self._mean((per * zpos_ok).sum(), zpos_ok.sum())
        return terms

    def _splice(self, clips: Tensor, clip_mask: Tensor) -> Tensor:
        """Clips [0, k) of video g and [k, C) of video g + 1 (global batch order, never itself) -> predict k - 1.

        Clips are encoded independently, so splicing clip features equals encoding the spliced frames. k is
        drawn for the whole global batch from a generator seeded by a call counter kept in the state dict, so
        every rank (and a resumed run) draws the same points."""
        c = self.cfg.num_clips
        g = gather_with_grad(clips, self.loss_gather)
        gm = gather_with_grad(clip_mask.to(torch.float64), self.loss_gather).all > 0.5
        n = g.total
        points = splice_points(int(self.splice_calls), n, c).to(clips.device)
        self.splice_calls += 1
        local = torch.arange(clips.shape[0], device=clips.device) + g.offset
        partner = (local + 1) % n
        k = points[local]
        take_own = torch.arange(c, device=clips.device)[None, :] < k[:, None]  # [B, C]
        spliced = torch.where(take_own[..., None], g.all[local], g.all[partner])
        ok = gm[local].all(-1) & gm[partner].all(-1) & (n > 1)
        logits = self.splice_head(spliced.flatten(1))
        ce = F.cross_entropy(logits, k - 1, reduction="none")
        self._stats["splice_acc"] = ((logits.argmax(-1) == k - 1) & ok).sum().float().detach() / ok.sum().clamp_min(1)
        return self._mean((ce * ok).sum(), ok.sum())

    def train_stats(self) -> dict[str, Tensor]:
        return dict(self._stats)


def splice_points(call: int, n: int, num_clips: int) -> Tensor:
    """Splice points k in [1, num_clips - 1] for the ``n`` videos of a global batch at the ``call``-th step."""
    gen = torch.Generator().manual_seed(1_000_003 * call + 7)
    return torch.randint(1, num_clips, (n,), generator=gen)


def clip_word_score(text: Embeddings, video: Embeddings) -> Tensor:
    """[N_text, N_video]: the mean over a video's real clips of each clip's best cosine with the caption's real
    words (0 for a caption without words); blocks of texts x videos keep 1,000 x 1,000 within a few MB."""
    if text.tokens is None or video.tokens is None:
        raise ValueError("clip_word_score needs the clip and word tokens of LocVTP's embeddings")
    w = F.normalize(text.tokens.float(), dim=-1)
    v = F.normalize(video.tokens.float(), dim=-1)
    wm = text.mask if text.mask is not None else torch.ones(w.shape[:2], dtype=torch.bool, device=w.device)
    vm = video.mask if video.mask is not None else torch.ones(v.shape[:2], dtype=torch.bool, device=v.device)
    out = torch.zeros(w.shape[0], v.shape[0], device=w.device)
    for a in range(0, w.shape[0], _SIM_CHUNK):
        wa, wma = w[a : a + _SIM_CHUNK], wm[a : a + _SIM_CHUNK]
        for s in range(0, v.shape[0], _SIM_CHUNK):
            vs, vms = v[s : s + _SIM_CHUNK], vm[s : s + _SIM_CHUNK]
            sim = torch.einsum("tld,vcd->tvcl", wa, vs).masked_fill(~wma[:, None, None, :], -math.inf)
            best = sim.max(-1).values  # [t, v, C]
            best = torch.where(torch.isfinite(best), best, torch.zeros_like(best))
            m = vms[None].to(best.dtype)
            out[a : a + _SIM_CHUNK, s : s + _SIM_CHUNK] = (best * m).sum(-1) / m.sum(-1).clamp_min(1)
    return out
