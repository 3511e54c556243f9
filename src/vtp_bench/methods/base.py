"""The Method seam: every method is a dual encoder plus its own losses, extra parts and parameter groups.

VTPModule (the one LightningModule) only ever calls what is defined here, so a new method is one file
that subclasses ``Method``, declares its ``Config`` dataclass and registers itself in ``METHODS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vtp_bench.models.layouts import CheckpointLayout, CheckpointTarget, LayoutMap, prefixed
from vtp_bench.registry import CHECKPOINT_LAYOUTS


@dataclass
class Embeddings:
    """What a method's encoder side returns for a batch.

    ``pooled`` is the global embedding [B, D] used by the default cosine similarity; ``tokens``/``mask``
    carry local features [B, N, D'] for methods whose score is fine-grained (DemoVLP region-word, LocVTP
    clip-word); ``extra`` holds any other per-item tensors (first dim B). Everything here must be
    computable from one side alone, so video embeddings can be computed once per video.
    """

    pooled: Tensor
    tokens: Tensor | None = None
    mask: Tensor | None = None
    extra: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.pooled.shape[0]

    def map(self, fn) -> "Embeddings":
        return Embeddings(
            pooled=fn(self.pooled),
            tokens=None if self.tokens is None else fn(self.tokens),
            mask=None if self.mask is None else fn(self.mask),
            extra={k: fn(v) for k, v in self.extra.items()},
        )

    def to(self, device: torch.device | str) -> "Embeddings":
        return self.map(lambda t: t.to(device))

    def detach(self) -> "Embeddings":
        return self.map(lambda t: t.detach())

    def index(self, idx: Tensor | slice) -> "Embeddings":
        return self.map(lambda t: t[idx])

    @staticmethod
    def cat(parts: list["Embeddings"]) -> "Embeddings":
        """Concatenate along the batch; local tokens of different lengths are right-padded (mask False)."""
        if not parts:
            raise ValueError("no embeddings to concatenate")
        pooled = torch.cat([p.pooled for p in parts])
        tokens = mask = None
        if parts[0].tokens is not None:
            n = max(p.tokens.shape[1] for p in parts)  # type: ignore[union-attr]
            tokens = torch.cat([F.pad(p.tokens, (0, 0, 0, n - p.tokens.shape[1])) for p in parts])  # type: ignore
            masks = []
            for p in parts:
                m = p.mask if p.mask is not None else p.tokens.new_ones(p.tokens.shape[:2], dtype=torch.bool)  # type: ignore
                masks.append(F.pad(m, (0, n - m.shape[1]), value=False))
            mask = torch.cat(masks)
        extra = {k: torch.cat([p.extra[k] for p in parts]) for k in parts[0].extra}
        return Embeddings(pooled=pooled, tokens=tokens, mask=mask, extra=extra)


def span_scores(clip_scores: Tensor, spans: Tensor, how: str) -> Tensor:
    """[Q, C] per-clip scores, [K, 2] inclusive clip runs -> [Q, K] moment scores: ``contrast`` = mean inside minus
    mean outside (the whole video scores 0), ``mean`` = mean inside."""
    if how not in ("contrast", "mean"):
        raise ValueError(f"moment score must be contrast or mean, got {how!r}")
    c = clip_scores.shape[1]
    csum = torch.cat([clip_scores.new_zeros(clip_scores.shape[0], 1), clip_scores.cumsum(1)], dim=1)
    inside = csum[:, spans[:, 1] + 1] - csum[:, spans[:, 0]]
    n_in = (spans[:, 1] - spans[:, 0] + 1).to(clip_scores.dtype)
    mean_in = inside / n_in
    if how == "mean":
        return mean_in
    n_out = c - n_in
    mean_out = (csum[:, -1:] - inside) / n_out.clamp_min(1)
    return torch.where(n_out > 0, mean_in - mean_out, torch.zeros_like(mean_in))


def cosine_similarity_matrix(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """[N, D] x [M, D] -> [N, M]; the eps clamp of Frozen-in-Time's ``sim_matrix``."""
    a = a / a.norm(dim=-1, keepdim=True).clamp_min(eps)
    b = b / b.norm(dim=-1, keepdim=True).clamp_min(eps)
    return a @ b.t()


@dataclass(frozen=True)
class Reported:
    """A number a method's paper (or its code's README) reports, with its protocol: ``vtp-bench compare --paper``
    shows it as a labelled row beside reproductions of the same benchmark, never marked best. ``metrics`` use the
    results' keys (``t2v/R@1``); ``num_queries`` is the benchmark's test size, for a binomial interval."""

    dataset: str  # a registered benchmark (msrvtt_1ka, msvd, lsmdc, didemo, ...)
    setting: str  # "zero-shot", "fine-tuned"
    metrics: dict[str, float]
    source: str  # where the number is printed (paper table, README), as the method's card says
    num_queries: int | None = None
    split: str = "test"
    task: str = "retrieval"


def t2v(r1: float, r5: float, r10: float, medr: float) -> dict[str, float]:
    """The text-to-video R@1 / R@5 / R@10 / MedR of a reported row, under the results' keys."""
    return {"t2v/R@1": r1, "t2v/R@5": r5, "t2v/R@10": r10, "t2v/MedR": medr}


@CHECKPOINT_LAYOUTS.register("vtp_bench")
class VTPBenchLayout(CheckpointLayout):
    """vtp_bench's own ``.ckpt`` (a Lightning checkpoint: the method's state dict under ``method.``) as the start of
    another run (``init.checkpoint``: MILES stage 2 from a vtp_bench pre-training, DemoVLP fine-tuning)."""

    keys, priority = "vtp_bench", 100

    def recognises(self, sd: Mapping[str, Any]) -> bool:
        return bool(sd) and all(k.startswith("method.") for k in sd)

    def normalise(self, sd: Mapping[str, Any]) -> dict[str, Any]:
        return {k[len("method."):]: v for k, v in sd.items()}


class Method(CheckpointTarget, nn.Module):
    """Base class. Subclasses set ``Config`` (a dataclass with a ``name`` field) and implement the encoders
    and ``losses``. ``losses`` returns named terms that are already weighted; VTPModule sums and logs them.
    A method whose paper released weights in a layout of its own registers that layout in its file and maps it in
    ``checkpoint_prefixes`` (``models.layouts``).
    """

    Config: ClassVar[type]
    reported: ClassVar[tuple[Reported, ...]] = ()  # the paper's numbers (docs/methods/<name>.md)

    def __init__(self, cfg: Any, loss_gather: str = "global") -> None:
        super().__init__()
        self.cfg = cfg
        self.loss_gather = loss_gather

    @classmethod
    def data_inputs(cls, cfg: Any) -> frozenset[str]:
        """What the data side loads per item for this method: names of registered inputs (``registry.INPUTS``,
        one file each in ``vtp_bench/data/inputs/`` or a plugin), e.g. ``video`` (the decoded clip),
        ``region_boxes`` (per-frame boxes of the manifest's boxes file, with the clip's crop), ``region_feats``
        (detector features from ``data.regions``), ``frame_times``, ``grounding_clips``. Read from the class and
        the method config, before any model is built. Default: the clip only."""
        return frozenset({"video"})

    # --- encoders -------------------------------------------------------------------------------------
    def encode_video(self, batch: dict[str, Any]) -> Embeddings:
        raise NotImplementedError

    def encode_text(self, batch: dict[str, Any]) -> Embeddings:
        """``batch["text"]`` is a list of strings; the method tokenizes with its own tokenizer."""
        raise NotImplementedError

    def similarity(self, text: Embeddings, video: Embeddings) -> Tensor:
        """[N_text, N_video], higher = more similar. Default: cosine of the pooled embeddings."""
        return cosine_similarity_matrix(text.pooled.float(), video.pooled.float())

    def moment_scores(self, text: Embeddings, clips: Embeddings, spans: Tensor, how: str = "contrast") -> Tensor:
        """Temporal grounding: [Q, K] scores of K candidate moments of one video for Q queries. ``clips`` are the
        video's consecutive clips (each encoded as a video), ``spans`` [K, 2] the inclusive clip runs. Default
        (zero-shot): ``pooled``, the cosine of each query's pooled embedding and the mean of the moment's
        L2-normalised pooled clip embeddings; ``contrast`` / ``mean``, the method's ``similarity`` of each query to
        each clip, then ``span_scores``. A method with a trained grounding head overrides this."""
        if how == "pooled":
            feats = F.normalize(clips.pooled.float(), dim=-1)
            csum = torch.cat([feats.new_zeros(1, feats.shape[1]), feats.cumsum(0)])
            windows = csum[spans[:, 1] + 1] - csum[spans[:, 0]]  # the mean's direction: the sum's
            return cosine_similarity_matrix(text.pooled.float(), windows)
        return span_scores(self.similarity(text, clips), spans, how)

    # --- released checkpoints --------------------------------------------------------------------------
    def checkpoint_prefixes(self, layout: CheckpointLayout) -> LayoutMap | None:
        """vtp_bench's own checkpoints map one to one; a method maps released layouts by overriding this (and
        calling it for ``vtp_bench``). Default otherwise: None, so the towers inside take their parts."""
        return LayoutMap({"": ""}) if layout.keys == "vtp_bench" else None

    def tower_prefixes(self, layout: CheckpointLayout, *towers: str) -> dict[str, str]:
        """The maps of the named tower attributes for ``layout``, under their attribute names."""
        return {src: dst for name in towers for src, dst in prefixed(name, getattr(self, name)
                                                                     .checkpoint_prefixes(layout)).items()}

    # --- training -------------------------------------------------------------------------------------
    def losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        raise NotImplementedError

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Default: one learning rate; no weight decay on biases, norms and embeddings (``optim.decay_groups``).
        A method with several learning rates calls ``decay_groups(self, lr_i, wd, names_i)`` per set."""
        from vtp_bench.optim import decay_groups

        return decay_groups(self, lr, weight_decay)

    def train_stats(self) -> dict[str, Tensor]:
        """Diagnostics of the last ``losses`` call that are not loss terms (codebook perplexity, live codes, mask
        ratio); VTPModule logs each as ``train/<name>``. Default: none."""
        return {}

    def on_train_batch_end(self, step: int) -> None:
        """Hook for state updated after the optimizer step (EMA / snapshot encoders, codebooks)."""


def config_to_kwargs(cfg: Any) -> dict[str, Any]:
    """A method Config (dataclass or DictConfig) as a plain dict."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}
