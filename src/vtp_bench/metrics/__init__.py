"""Retrieval and grounding metrics, with the semantics of DESIGN.md "Evaluation semantics"."""

from vtp_bench.metrics.grounding import grounding_metrics
from vtp_bench.metrics.retrieval import retrieval_metrics

__all__ = ["grounding_metrics", "retrieval_metrics"]
