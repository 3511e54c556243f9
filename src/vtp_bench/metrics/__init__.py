"""Retrieval and zero-shot classification (and, later, grounding) metrics, with the semantics of DESIGN.md
"Evaluation semantics"."""

from vtp_bench.metrics.classification import PROMPT_TEMPLATE, PROMPT_TEMPLATES, class_prompts, zeroshot_metrics
from vtp_bench.metrics.retrieval import retrieval_metrics

__all__ = ["PROMPT_TEMPLATE", "PROMPT_TEMPLATES", "class_prompts", "retrieval_metrics", "zeroshot_metrics"]
