"""Shared test helpers: every registered method at CPU-test size, and the real annotation files.

``tiny_config(method)`` is ``experiments/<method>_synth.yaml`` with ``tests/tiny/<method>.yaml`` merged over it
and the CPU settings (``vtp_bench.testing``, which the benchmarks share): the one place a method's test size is
written, so that every check parametrised over the registered methods (gradients, learning, schedules, oracle
ranks) picks a new method up at once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import DictConfig

from vtp_bench.registry import METHODS
from vtp_bench.testing import CPU, fake_batch, fake_grounding_clips, fake_method_inputs  # noqa: F401 (for the tests)
from vtp_bench.testing import tiny_config as _tiny_config
from vtp_bench.testing import tiny_overrides as _tiny_overrides

# the methods of the package (not test-only ones such as tests/oracle.py): what parametrised checks run over
PACKAGE_METHODS = [n for n in METHODS.names() if METHODS.get(n).__module__.startswith("vtp_bench.methods.")]
TINY_DIR = Path(__file__).parent / "tiny"


def tiny_overrides(method: str) -> list[str]:
    """CPU settings + ``tests/tiny/<method>.yaml`` as ``key=value`` overrides of ``<method>_synth``."""
    return _tiny_overrides(method, TINY_DIR)


def tiny_config(method: str, *overrides: str) -> DictConfig:
    return _tiny_config(method, *overrides, tiny_dir=TINY_DIR)


def _annotation_candidates() -> list[Path]:
    here = Path(__file__).resolve().parents[1]
    env = os.environ.get("VTP_ANNOTATIONS")
    return ([Path(env)] if env else []) + [here.parent / "shared" / "data" / "annotations",
                                           Path("/work/shared/data/annotations")]


def find_annotations() -> Path | None:
    """The benchmarks' real annotation files: $VTP_ANNOTATIONS, ../shared next to the clone, /work/shared."""
    return next((c for c in _annotation_candidates() if c.is_dir()), None)


def annotations_dir() -> Path:
    """``find_annotations()``, or the calling test is skipped; under CI (``CI`` set) it fails instead, so that
    CI cannot pass by skipping the checks on the real files."""
    found = find_annotations()
    if found is not None:
        return found
    looked = [str(c) for c in _annotation_candidates()]
    msg = f"needs the real annotation files (set $VTP_ANNOTATIONS; looked in {looked})"
    if os.environ.get("CI"):
        pytest.fail(msg + "; CI is set, so this is a failure, not a skip")
    pytest.skip(msg)


def assert_per_query_means(result: dict) -> int:
    """A results JSON's ``per_query`` recomputes its metrics: every metric that is a mean over items is the mean of
    its per-item list (to 1e-9), MedR the median of the ranks, mean per-class accuracy the mean over classes of the
    per-class mean of top-1; each list is as long as its ids. Returns the number of metrics checked."""
    import numpy as np

    pq, metrics = result["per_query"], result["metrics"]
    checked = 0
    for key, value in metrics.items():
        if key.endswith("num_queries"):
            continue
        if key.endswith("/MedR"):
            ranks = pq[key[: -len("MedR")] + "rank"]
            assert float(np.median(ranks)) == pytest.approx(value, abs=1e-9), key
        elif key == "mean_class_acc":
            top1, labels = np.array(pq["top1"]), np.array(pq["labels"])
            per_class = [top1[labels == c].mean() for c in np.unique(labels)]
            assert float(np.mean(per_class)) == pytest.approx(value, abs=1e-9), key
        else:
            assert float(np.mean(pq[key])) == pytest.approx(value, abs=1e-9), key
        ids = pq[f"{key.split('/')[0]}/ids" if "/" in key else "ids"]
        assert len(ids) == len(pq[key[: -len("MedR")] + "rank" if key.endswith("/MedR") else
                                  ("top1" if key == "mean_class_acc" else key)]), key
        checked += 1
    return checked
