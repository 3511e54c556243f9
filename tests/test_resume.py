"""A run killed with SIGKILL in the middle of an epoch and resumed with --resume reaches exactly the
weights and metrics of an uninterrupted run (deterministic mode, CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from vtp_bench.data.synthetic import generate_synthetic

VTP = str(Path(sys.executable).with_name("vtp-bench"))
ARGS = ["trainer.accelerator=cpu", "trainer.max_epochs=2", "trainer.deterministic=true", "data.batch_size=4",
        "data.eval_batch_size=8", "data.num_workers=1", "method.text.preset=tiny", "method.text.freeze=false",
        "method.video.img_size=32", "method.video.depth=1", "data.img_size=32", "run.ckpt_every_n_steps=2",
        "optim.warmup_steps=3", "trainer.enable_progress_bar=false"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VTP_RUN_VERSION", "RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def test_kill_and_resume_matches_uninterrupted(tmp_path):
    root = tmp_path / "data"
    generate_synthetic(root / "synth", num_videos=50, seed=9, grounding_videos=0, progress=False)
    base = [VTP, "train", "frozen_synth", *ARGS, f"data.root={root}", f"run.dir={tmp_path / 'runs'}"]
    full = subprocess.run(base + ["run.version=full"], env=_env(), capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr[-3000:]

    # 40 training clips / batch 4 = 10 steps per epoch: kill after the checkpoint of step 14 (mid-epoch 1)
    run = tmp_path / "runs" / "frozen_synth" / "killed"
    target = run / "checkpoints" / "epoch1-step14.ckpt"
    proc = subprocess.Popen(base + ["run.version=killed"], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            torch.load(target, map_location="cpu", weights_only=True)  # complete, not half-written
            break
        except Exception:
            time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert target.is_file(), "the run never reached step 14"
    assert not (run / "summary.json").exists(), "the run finished before it was killed"

    resumed = subprocess.run(base + ["run.version=killed", "--resume", str(target)], env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = json.loads((tmp_path / "runs" / "frozen_synth" / "full" / "summary.json").read_text())
    b = json.loads((run / "summary.json").read_text())
    assert b["global_step"] == a["global_step"] == 20
    assert b["val_metrics"] == a["val_metrics"]
    wa, wb = _weights(tmp_path / "runs" / "frozen_synth" / "full"), _weights(run)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
