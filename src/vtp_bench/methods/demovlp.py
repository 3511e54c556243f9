"""DemoVLP (Cai et al., "Revitalize Region Feature for Democratizing Video-Language Pre-training", 2022).

A dual encoder whose visual side sees only regions: per frame the K (30) most confident detector boxes, each a
2048-d feature plus 6-d geometry, through ``object_transformer`` (docs/methods/demovlp.md). The text side is
DistilBERT padded to 100 tokens with ``ReLU -> Linear(768, 256)`` on every token ([CLS] = global, the rest =
local). Loss = NormSoftmax (τ 0.05) on the global embeddings + the bidirectional region-word alignment (RWA)
loss on the local ones, unweighted (the official ``coef`` is never read). Retrieval score = cosine of the
globals + the RWA score (§5.2).

Region inputs (``region_source``):
- ``features``: detector features from the data side (``data.regions``, the official ``.npz`` layout);
- ``roi_pool`` (a deviation, for data without detector outputs): RoI-pool the patch tokens of a video backbone
  (``backbone``, any encoder with a patch grid) over given boxes (the synthetic dataset's ground truth),
  area-weighted; the pooled width replaces 2048.

Faithful to ``showlab/DemoVLP`` (model/loss.py ``xattn_score_fast``, ``RWALoss``), including its padding
semantics (``padding="official"``: padded word and region slots take part in the L2 norms, the focal mean and
the final means); ``padding="masked"`` leaves them out. Deviations and quirks: docs/methods/demovlp.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vtp_bench.config import choice
from vtp_bench.distributed import rank_world
from vtp_bench.losses import gather_with_grad, norm_softmax_loss
from vtp_bench.methods.base import Embeddings, Method, cosine_similarity_matrix
from vtp_bench.models.build import build_encoder
from vtp_bench.models.layouts import CheckpointLayout, LayoutMap
from vtp_bench.registry import CHECKPOINT_LAYOUTS, METHODS

FOCALS = ("equal", "none")  # BFAN's "equal" focal attention | none (the official else-branch, focal_type="prob")
PADDINGS = ("official", "masked")
PAD_BIAS = 100.0  # DemoVLP's additive masks: (mask - 1) * 100, scaled by λ inside the softmax
EPS = 1e-8


# ----------------------------------------------------------------------------------- region-word alignment
def _l2norm(x: Tensor, dim: int) -> Tensor:
    """SCAN's l2norm: x / (||x|| + eps) (eps added, not clamped)."""
    return x / (torch.linalg.vector_norm(x, dim=dim, keepdim=True) + EPS)


def _attend(raw: Tensor, q_dim: int, c_dim: int, q_valid: Tensor, c_valid: Tensor, q_bias: Tensor, c_bias: Tensor,
            lam: float, focal: str, masked: bool) -> Tensor:
    """Stacked cross-attention weights of one direction over ``raw`` = LeakyReLU(cos(region, word)) [cv, N, ct, L]:
    L2-normalised over the queries (dim ``q_dim``), softmax over the context slots (dim ``c_dim``) with λ, then
    BFAN's "equal" focal re-weighting. The validity masks and the official additive biases (0 / -100) broadcast
    to ``raw``."""
    if masked:
        raw = raw * q_valid  # padded queries take no part in the norm
    a = _l2norm(raw, dim=q_dim)
    if masked:
        a = a.mul_(lam).masked_fill_(~c_valid, float("-inf"))
    else:  # official: ((a + m_query) + m_context) * λ; m_query is constant along the softmax (kept for parity)
        a = a.add_(q_bias).add_(c_bias).mul_(lam)
    attn = a.softmax(dim=c_dim)
    del a
    if focal == "equal":  # keep the context slots whose weight exceeds the mean over the slots
        slots = c_valid.sum(c_dim, keepdim=True).to(attn.dtype) if masked else attn.shape[c_dim]
        keep = attn * slots > attn.sum(c_dim, keepdim=True)
        kept = attn * keep
        del keep
        total = kept.sum(c_dim, keepdim=True)
        if bool((total > 0).all()):
            attn = kept.div_(total)
        else:  # a row of exactly equal weights keeps nothing (0/0 in the official code): keep all of it instead
            attn = torch.where(total > 0, kept / total.clamp_min(torch.finfo(attn.dtype).tiny), attn)
    return attn


def _mean(x: Tensor, valid: Tensor, dim: int, masked: bool) -> Tensor:
    if not masked:
        return x.mean(dim)
    v = valid.to(x.dtype)
    return (x * v).sum(dim) / v.sum(dim).clamp_min(1.0)


def _cosine(dot: Tensor, sq_norm: Tensor, query_norm: Tensor) -> Tensor:
    """cos(query, Σ_c attn_c ĉ_c) from Σ_c attn_c (q̂·ĉ_c) and |Σ_c attn_c ĉ_c|² = attnᵀ G attn, without
    building the attended vectors: the query is q = (|q| + eps) q̂ exactly (q̂ = SCAN's l2norm), and the
    denominator is the official ``cosine_similarity``'s max(|q| |context|, eps)."""
    return dot * (query_norm + EPS) / (query_norm * sq_norm.clamp_min(0.0).sqrt()).clamp_min(EPS)


def _block_scores(v: Tensor, v_valid: Tensor, w: Tensor, w_valid: Tensor, lam: float, focal: str,
                  masked: bool) -> Tensor:
    """[cv, N, D] regions x [ct, L, D] words -> [cv, ct] bidirectional score (both directions summed).

    Tensors are laid out [cv, N, ct, L] (the matmul's own layout, no transposed copies)."""
    cv, n, d = v.shape
    ct, l, _ = w.shape
    v_norm, w_norm = torch.linalg.vector_norm(v, dim=-1), torch.linalg.vector_norm(w, dim=-1)
    vn, wn = v / (v_norm[..., None] + EPS), w / (w_norm[..., None] + EPS)
    vv, wv = v_valid.view(cv, n, 1, 1), w_valid.view(1, 1, ct, l)
    vb, wb = (vv.to(v.dtype) - 1.0) * PAD_BIAS, (wv.to(v.dtype) - 1.0) * PAD_BIAS
    sim = (vn.reshape(cv * n, d) @ wn.reshape(ct * l, d).t()).view(cv, n, ct, l)  # cosines of unit vectors
    raw = F.leaky_relu(sim, 0.1)
    # (a) words attend to regions: queries = words (dim 3), context = regions (dim 1)
    alpha = _attend(raw, 3, 1, wv, vv, wb, vb, lam, focal, masked)
    dot = (alpha * sim).sum(1)  # [cv, ct, L]
    gram_v = vn @ vn.transpose(1, 2)  # [cv, N, N]
    sq = (torch.bmm(gram_v, alpha.view(cv, n, ct * l)).view_as(alpha) * alpha).sum(1)
    del alpha
    words_to_regions = _mean(_cosine(dot, sq, w_norm[None]), w_valid[None], -1, masked)  # [cv, ct]
    # (b) regions attend to words: queries = regions (dim 1), context = words (dim 3)
    beta = _attend(raw, 1, 3, vv, wv, vb, wb, lam, focal, masked)
    del raw
    dot = (beta * sim).sum(-1)  # [cv, N, ct]
    del sim
    beta_j = beta.permute(2, 0, 1, 3).reshape(ct, cv * n, l)  # text-major, for the per-text Gram matrices
    del beta
    sq = (torch.bmm(beta_j, wn @ wn.transpose(1, 2)) * beta_j).sum(-1).view(ct, cv, n).permute(1, 2, 0)
    regions_to_words = _mean(_cosine(dot, sq, v_norm[..., None]), v_valid[..., None], 1, masked)  # [cv, ct]
    return regions_to_words + words_to_regions


def region_word_scores(
    video_tokens: Tensor,
    video_valid: Tensor,
    text_tokens: Tensor,
    text_valid: Tensor,
    lam: float = 20.0,
    focal: str = "equal",
    padding: str = "official",
    chunk: int = 32,
) -> Tensor:
    """DemoVLP's region-word alignment score (``xattn_score_fast``), [Bv, Bt] (videos x texts, the official
    orientation): words attend to regions and regions attend to words, each direction the mean cosine between
    a token and its attended context, the two summed (in [-2, 2]).

    ``video_valid`` [Bv, N] / ``text_valid`` [Bt, L] are True for real tokens. ``padding="official"``: padded
    slots are masked out of the softmax keys only (additive -100 x λ) and otherwise count in the L2 norms, the
    focal mean and the final means, as the official code does; ``"masked"``: they are left out everywhere.
    ``chunk``: videos and texts per block, so memory is bounded by ``chunk²`` pairs whatever Bv and Bt are.
    """
    if focal not in FOCALS:
        raise ValueError(f"focal must be one of {FOCALS}, got {focal!r}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    if video_tokens.ndim != 3 or text_tokens.ndim != 3 or video_tokens.shape[-1] != text_tokens.shape[-1]:
        raise ValueError(f"video_tokens [Bv, N, D] and text_tokens [Bt, L, D] with the same D, got "
                         f"{tuple(video_tokens.shape)} and {tuple(text_tokens.shape)}")
    if video_valid.shape != video_tokens.shape[:2] or text_valid.shape != text_tokens.shape[:2]:
        raise ValueError(f"masks must be [Bv, N] and [Bt, L], got {tuple(video_valid.shape)} and "
                         f"{tuple(text_valid.shape)}")
    dtype = torch.promote_types(video_tokens.dtype, torch.float32)
    v, w = video_tokens.to(dtype), text_tokens.to(dtype)
    vm, wm = video_valid.bool(), text_valid.bool()
    masked = padding == "masked"
    rows = []
    for i in range(0, v.shape[0], chunk):
        cols = [_block_scores(v[i:i + chunk], vm[i:i + chunk], w[j:j + chunk], wm[j:j + chunk], lam, focal, masked)
                for j in range(0, w.shape[0], chunk)]
        rows.append(torch.cat(cols, dim=1))
    return torch.cat(rows, dim=0)


def rwa_rows(scores: Tensor, lam: float = 20.0, targets: Tensor | None = None) -> Tensor:
    """Per-row RWA loss: KL(softmax_j(λ S_ij) || one-hot(target_i) + 1e-6), the official ``RWALoss.forward``
    (``Σ_j P_ij (log P_ij - log(I_ij + 1e-6))``) row by row; ``targets`` default: the diagonal."""
    s = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
    if targets is None:
        targets = torch.arange(s.shape[0], device=s.device)
    logp = F.log_softmax(s * lam, dim=1)
    labels = F.one_hot(targets, s.shape[1]).to(s.dtype)
    return (logp.exp() * (logp - torch.log(labels + 1e-6))).sum(dim=1)


def rwa_loss(scores: Tensor, lam: float = 20.0) -> Tensor:
    """DemoVLP's RWA loss on a square [B_video, B_text] score matrix (pair i = video i, text i): mean over the
    videos of the row-wise KL to the ε-smoothed identity (softmax over texts only, one direction)."""
    return rwa_rows(scores, lam).mean()


# ------------------------------------------------------------------------------------------------ RoI pool
def roi_pool(patches: Tensor, boxes: Tensor) -> Tensor:
    """Area-weighted average of patch features inside each box: ``patches`` [B, T, h, w, D], ``boxes``
    [B, T, K, >=4] normalised x1 y1 x2 y2 -> [B, T, K, D]; a box with no area gets zeros."""
    h, w = patches.shape[2:4]

    def overlap(lo: Tensor, hi: Tensor, n: int) -> Tensor:  # [B, T, K] -> [B, T, K, n] covered fraction of cells
        edges = torch.arange(n + 1, device=lo.device, dtype=lo.dtype) / n
        return (torch.minimum(hi[..., None], edges[1:]) - torch.maximum(lo[..., None], edges[:-1])).clamp_min(0)

    b = boxes.to(patches.dtype)
    weights = overlap(b[..., 1], b[..., 3], h)[..., :, None] * overlap(b[..., 0], b[..., 2], w)[..., None, :]
    weights = weights.flatten(-2)  # [B, T, K, h*w]
    weights = weights / weights.sum(-1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)
    return torch.einsum("btkp,btpd->btkd", weights, patches.flatten(2, 3))


# -------------------------------------------------------------------------------------------------- method
@dataclass
class DemoVLPConfig:
    name: str = "demovlp"
    # paper size: ObjectTransformer ViT-B (8 frames x 30 regions of 2048 + 6) and DistilBERT padded to 100
    video: dict[str, Any] = field(default_factory=lambda: {"name": "object_transformer", "preset": "base"})
    text: dict[str, Any] = field(default_factory=lambda: {
        "name": "hf_text", "preset": "distilbert-base", "max_length": 100, "padding": "max_length"})
    region_source: str = choice("features", ("features", "roi_pool"))  # roi_pool: a deviation (no detector)
    backbone: dict[str, Any] = field(default_factory=dict)  # roi_pool: the video encoder whose patches are pooled
    embed_dim: int = 256  # txt_proj width; must equal the video encoder's output_dim
    temperature: float = 0.05  # NormSoftmax on the global embeddings
    lam: float = 20.0  # λ of the RWA softmaxes and of the RWA loss
    focal: str = choice("equal", FOCALS)  # every shipped config: "equal"
    padding: str = choice("official", PADDINGS)  # official: padded slots count in norms and means
    local_weight: float = 1.0  # the official coef is never read: 1
    use_global: bool = True
    use_local: bool = True
    score_chunk: int = 32  # videos / texts per block of the RWA score (memory ~ chunk² pairs)
    eval_transpose_bug: bool = False  # parity: add the [video, text] local matrix untransposed (official eval)


@CHECKPOINT_LAYOUTS.register("demovlp")
class DemoVLPLayout(CheckpointLayout):
    """DemoVLP's released files: ``object_model.*`` (the ObjectTransformer under its official names),
    ``text_model.<HF DistilBERT keys>``, ``txt_proj.*``."""

    keys, priority = "demovlp", 80

    def recognises(self, sd: Mapping[str, Any]) -> bool:
        return any(k.startswith("object_model.") for k in sd)


@METHODS.register("demovlp")
class DemoVLP(Method):
    Config = DemoVLPConfig

    @classmethod
    def data_inputs(cls, cfg: Any) -> frozenset[str]:
        if cfg.region_source == "roi_pool":
            return frozenset({"video", "region_boxes"})
        return frozenset({"region_feats"})

    def __init__(self, cfg: Any, loss_gather: str = "global") -> None:
        super().__init__(cfg, loss_gather)
        if not (cfg.use_global or cfg.use_local):
            raise ValueError("method.use_global and method.use_local are both false: no loss left")
        self.object_model = build_encoder(cfg.video, "method.video")
        self.text_model = build_encoder(cfg.text, "method.text")
        self.backbone = None
        if cfg.region_source == "roi_pool":
            if not cfg.backbone:
                raise ValueError("method.region_source=roi_pool needs method.backbone (a video encoder with patch "
                                 "tokens, e.g. {name: space_time_vit, preset: tiny})")
            self.backbone = build_encoder(cfg.backbone, "method.backbone")
        if self.object_model.width != cfg.embed_dim:
            raise ValueError(f"method.embed_dim={cfg.embed_dim} must equal the video encoder's output_dim "
                             f"{self.object_model.width} (global and local scores compare the two)")
        self.txt_proj = nn.Sequential(nn.ReLU(), nn.Linear(self.text_model.width, cfg.embed_dim))
        # parameters the official forward never uses (the final norm; norm3 without a time module) stay in the
        # state dict for checkpoint parity but do not train: DDP refuses trainable parameters without gradients
        for name, p in self.object_model.named_parameters():
            if name.startswith("norm.") or (".norm3." in name and not self.object_model.blocks[0].time_attention):
                p.requires_grad_(False)

    def checkpoint_prefixes(self, layout: CheckpointLayout) -> LayoutMap | None:
        if layout.keys != "demovlp":
            return super().checkpoint_prefixes(layout)
        return LayoutMap({**self.tower_prefixes(layout, "object_model", "text_model"), "txt_proj.": "txt_proj."})

    # --- encoders -------------------------------------------------------------------------------------
    def region_features(self, batch: dict[str, Any]) -> Tensor:
        """[B, T, K, F]: the detector features, or the backbone's patch tokens pooled over the boxes."""
        if self.backbone is None:
            return batch["region_feats"]
        out = self.backbone(batch["video"], batch.get("video_mask"))
        if out.grid is None:
            raise ValueError(f"method.backbone {type(self.backbone).__name__} returns no patch grid to pool")
        f, h, w = out.grid
        patches = out.tokens[:, out.tokens.shape[1] - f * h * w:].reshape(out.tokens.shape[0], f, h, w, -1)
        if patches.shape[-1] != self.object_model.feat_dim:
            raise ValueError(f"method.video.feat_dim={self.object_model.feat_dim} must equal the width of the "
                             f"backbone's patch tokens, {patches.shape[-1]} (region features are pooled tokens)")
        return roi_pool(patches, batch["region_boxes"])

    def encode_video(self, batch: dict[str, Any]) -> Embeddings:
        out = self.object_model(self.region_features(batch), batch["region_boxes"], batch.get("region_mask"))
        return Embeddings(pooled=out.pooled, tokens=out.tokens[:, 1:], mask=out.mask[:, 1:])

    def encode_text(self, batch: dict[str, Any]) -> Embeddings:
        out = self.text_model(batch["text"])
        tokens = self.txt_proj(out.tokens)
        mask = out.mask if out.mask is not None else tokens.new_ones(tokens.shape[:2], dtype=torch.bool)
        return Embeddings(pooled=tokens[:, 0], tokens=tokens[:, 1:], mask=mask[:, 1:])  # [CLS] = global

    def local_scores(self, video: Embeddings, text: Embeddings) -> Tensor:
        """RWA scores [N_video, N_text] of the local tokens."""
        c = self.cfg
        return region_word_scores(video.tokens, video.mask, text.tokens, text.mask, c.lam, c.focal, c.padding,
                                  c.score_chunk)

    def similarity(self, text: Embeddings, video: Embeddings) -> Tensor:
        """S = cos(global) + S_localᵀ, [N_text, N_video]. ``eval_transpose_bug``: the official sum, which adds
        the [video, text] local matrix untransposed (right on the diagonal only; square sets only)."""
        dtype = torch.promote_types(text.pooled.dtype, torch.float32)
        sim = cosine_similarity_matrix(text.pooled.to(dtype), video.pooled.to(dtype)) if self.cfg.use_global else 0.0
        if not self.cfg.use_local:
            return sim  # type: ignore[return-value]
        local = self.local_scores(video, text)
        if self.cfg.eval_transpose_bug:
            if local.shape[0] != local.shape[1]:
                raise ValueError(f"eval_transpose_bug needs as many texts as videos, got {local.shape[1]} texts and "
                                 f"{local.shape[0]} videos")
            return sim + local * self.cfg.local_weight
        return sim + local.t() * self.cfg.local_weight

    # --- training -------------------------------------------------------------------------------------
    def losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        video, text = self.encode_video(batch), self.encode_text(batch)
        terms: dict[str, Tensor] = {}
        if self.cfg.use_global:
            nce = norm_softmax_loss(text.pooled, video.pooled, self.cfg.temperature, self.loss_gather)
            terms.update(nce_t2v=nce["t2v"], nce_v2t=nce["v2t"])
        if self.cfg.use_local:
            terms["rwa"] = self.cfg.local_weight * self._rwa(video, text)
        return terms

    def _rwa(self, video: Embeddings, text: Embeddings) -> Tensor:
        """RWA loss of this rank's videos against the texts of every rank (``loss.gather=global``, exact
        gradients as ``norm_softmax_loss``) or of this rank only (``none``: the official per-GPU batch)."""
        tokens, valid = _same_length_on_all_ranks(text.tokens, text.mask, self.loss_gather)
        g_tokens = gather_with_grad(tokens, self.loss_gather)
        g_valid = gather_with_grad(valid.to(tokens.dtype), self.loss_gather).all > 0.5
        scores = self.local_scores(video, Embeddings(pooled=text.pooled, tokens=g_tokens.all, mask=g_valid))
        targets = torch.arange(scores.shape[0], device=scores.device) + g_tokens.offset
        rows = rwa_rows(scores, self.cfg.lam, targets)
        scale = rank_world()[1] / g_tokens.total if self.loss_gather == "global" else 1.0 / scores.shape[0]
        return rows.sum() * scale


def _same_length_on_all_ranks(tokens: Tensor, valid: Tensor, gather: str) -> tuple[Tensor, Tensor]:
    """Texts padded to the longest length over the ranks (padding "longest" differs per rank), extra slots
    invalid, so that they can be gathered. With ``padding: max_length`` (the paper config) nothing changes."""
    _, world = rank_world()
    if gather != "global" or world == 1:
        return tokens, valid
    length = torch.tensor([tokens.shape[1]], device=tokens.device)
    dist.all_reduce(length, op=dist.ReduceOp.MAX)
    extra = int(length.item()) - tokens.shape[1]
    if extra == 0:
        return tokens, valid
    return F.pad(tokens, (0, 0, 0, extra)), F.pad(valid, (0, extra), value=False)


__all__ = ["DemoVLP", "DemoVLPConfig", "region_word_scores", "roi_pool", "rwa_loss", "rwa_rows"]
