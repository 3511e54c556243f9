"""Retrieval, zero-shot classification and temporal grounding metrics, with the semantics of docs/protocols.md
"Evaluation semantics"."""

from vtp_bench.metrics.classification import PROMPT_TEMPLATE, PROMPT_TEMPLATES, class_prompts, zeroshot_metrics
from vtp_bench.metrics.grounding import grounding_metrics
from vtp_bench.metrics.retrieval import retrieval_metrics, retrieval_metrics_from_embeddings

__all__ = ["PROMPT_TEMPLATE", "PROMPT_TEMPLATES", "class_prompts", "grounding_metrics", "retrieval_metrics",
           "retrieval_metrics_from_embeddings", "zeroshot_metrics"]
