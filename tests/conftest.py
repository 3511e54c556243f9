"""Shared test helpers: every registered method at CPU-test size, the real annotation files, and the fixtures that
several test modules use.

``tiny_config(method)`` is ``experiments/<method>_synth.yaml`` with ``experiments/tiny/<method>.yaml`` (in the
package, next to the experiments) merged over it and the CPU settings (``vtp_bench.testing``, which the benchmarks
share): the one place a method's test size is written, so that every check parametrised over the registered methods
(gradients, learning, schedules, oracle ranks) picks a new method up at once.

Builders shared between test modules live in ``tests/helpers`` (a test module never imports another test module):
``helpers.oracle`` (the known-answer method), ``helpers.official`` and ``helpers.clip`` (independent computations
of the released models), ``helpers.videos`` (frame-indexed video files), ``helpers.runs`` (CLI runs, checkpoints).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vtp_bench.registry import METHODS
from vtp_bench.testing import (  # noqa: F401 (for the tests)
    CPU,
    TINY_DIR,
    fake_batch,
    fake_grounding_clips,
    fake_method_inputs,
    tiny_config,
    tiny_overrides,
)

# the methods of the package (not test-only ones such as tests/helpers/oracle.py): what parametrised checks run over
PACKAGE_METHODS = [n for n in METHODS.names() if METHODS.get(n).__module__.startswith("vtp_bench.methods.")]


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


@pytest.fixture(scope="module")
def coded_grounding(tmp_path_factory) -> Path:
    """3 videos of 6 s whose seconds are coloured by code (``helpers.oracle.SEGMENTS``); each query names a code and
    its moment is where that code is shown (the grounding tests move it by a second to plant known IoUs)."""
    from helpers import oracle  # here, not at the top: importing it registers the oracle method

    return oracle.write_coded_grounding(tmp_path_factory.mktemp("gr"))


@pytest.fixture(scope="session", autouse=True)
def no_wandb_folders_left_in_tmp():
    """wandb makes two temporary folders (``tmp*wandb-artifacts``, ``tmp*wandb-media``) in every process that
    imports it, in the system's temporary folder and for good; those this session made are removed at its end."""
    import shutil
    import tempfile

    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob("tmp*wandb-*"))
    yield
    for folder in set(tmp.glob("tmp*wandb-*")) - before:
        shutil.rmtree(folder, ignore_errors=True)
