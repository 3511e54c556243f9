"""Retrieval (and, later, grounding) metrics, with the semantics of DESIGN.md "Evaluation semantics"."""

from vtp_bench.metrics.retrieval import retrieval_metrics

__all__ = ["retrieval_metrics"]
