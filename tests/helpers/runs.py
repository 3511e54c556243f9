"""Training runs and checkpoints that several test modules make: the ``vtp-bench`` launcher run in a clean
subprocess, the tiny frozen_synth runs of the CLI tests, the resumable run of the resume checks and the comparison
of two runs, and a module saved as a checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from vtp_bench.config import to_dict
from vtp_bench.testing import tiny_overrides

VTP = str(Path(sys.executable).with_name("vtp-bench"))  # the venv's launcher
# what a launcher sets for its children: a test's subprocess must not inherit them from the test process
LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "VTP_RUN_VERSION")


def run_clean(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``args`` in a subprocess, unbuffered, with the launcher variables of ``LAUNCH_VARS`` removed unless ``env``
    sets them; the output is captured (``.stdout``, ``.stderr``). Its temporary files (torch.distributed's
    ``torchelastic_*`` folders, ...) go to ``cwd/.tmp``, which the test's folder holds, not to /tmp."""
    tmp = Path(cwd) / ".tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    e = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp), **(env or {})}
    for k in LAUNCH_VARS:
        if k not in (env or {}):
            e.pop(k, None)
    return subprocess.run(args, cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)


def frozen_tiny(*extra: str) -> list[str]:
    """frozen_synth at its CPU-test size (``vtp_bench.testing.tiny_overrides``) without warm-up, then ``extra``:
    the training runs of the CLI tests."""
    return [*tiny_overrides("frozen"), "optim.warmup_steps=0", *extra]


TRAIN_TINY = frozen_tiny("trainer.max_steps=3", "data.eval_batch_size=3")
# a run of 2 epochs with mid-epoch checkpoints every 3 steps and a warm-up + cosine schedule, deterministic: what a
# resumed run must reproduce exactly (tests/test_resume.py, tests/test_shards.py)
RESUME_ARGS = [*tiny_overrides("frozen"), "trainer.max_epochs=2", "trainer.deterministic=true", "data.num_workers=1",
               "run.ckpt_every_n_steps=3", "optim.warmup_steps=3", "optim.scheduler=cosine",
               "run.keep_checkpoints=all"]


def last_weights(run: Path) -> dict[str, torch.Tensor]:
    """The state dict of a run's ``checkpoints/last.ckpt``."""
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def assert_same_run(a: Path, b: Path, steps: int) -> None:
    """Runs ``a`` and ``b`` both ended at ``steps`` with the same (non-empty) validation metrics and bit-equal
    weights."""
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (a, b))
    assert sb["global_step"] == sa["global_step"] == steps
    assert sb["val_metrics"] == sa["val_metrics"] and sa["val_metrics"]
    wa, wb = last_weights(a), last_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def save_checkpoint(module, path: Path) -> Path:
    """A ``VTPModule`` saved as a checkpoint that ``--ckpt`` and ``vtp_bench.load`` read (weights + config)."""
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {"config": to_dict(module.cfg)}}, path)
    return path
