"""Resuming reaches exactly the weights and metrics of an uninterrupted run (deterministic mode, CPU):

- a run killed with SIGKILL mid-epoch, resumed with a bare ``--resume`` (its own ``last.ckpt``);
- a run resumed from an end-of-epoch checkpoint;
- a 2-rank DDP run resumed from a mid-epoch checkpoint, on 2 ranks;
- ``--resume`` without a path and without ``run.version`` takes the newest run; with nothing to resume it is an
  error, never a silent fresh start.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides
from vtp_bench.cli import main
from vtp_bench.data.synthetic import generate_synthetic

VTP = str(Path(sys.executable).with_name("vtp-bench"))
ARGS = [*tiny_overrides("frozen"), "trainer.max_epochs=2", "trainer.deterministic=true", "data.num_workers=1",
        "run.ckpt_every_n_steps=3", "optim.warmup_steps=3", "optim.scheduler=cosine"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VTP_RUN_VERSION", "RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(args: list[str]) -> None:
    r = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def _weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def _assert_same_run(a: Path, b: Path, steps: int) -> None:
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (a, b))
    assert sb["global_step"] == sa["global_step"] == steps
    assert sb["val_metrics"] == sa["val_metrics"] and sa["val_metrics"]
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    generate_synthetic(root / "synth", num_videos=50, seed=9, grounding_videos=0, progress=False)
    return root


@pytest.fixture(scope="module")
def full_run(data_root, tmp_path_factory) -> Path:
    """The uninterrupted reference: 40 training clips / batch 4 = 10 steps per epoch, 2 epochs."""
    runs = tmp_path_factory.mktemp("runs")
    _run([VTP, "train", "frozen_synth", *ARGS, f"data.root={data_root}", f"run.dir={runs}", "run.version=full"])
    return runs / "frozen_synth" / "full"


def test_kill_and_bare_resume_matches_uninterrupted(data_root, full_run, tmp_path):
    base = [VTP, "train", "frozen_synth", *ARGS, f"data.root={data_root}", f"run.dir={tmp_path / 'runs'}",
            "run.version=killed"]
    run = tmp_path / "runs" / "frozen_synth" / "killed"
    target = run / "checkpoints" / "epoch1-step15.ckpt"  # kill after the checkpoint of step 15 (mid-epoch 1)
    proc = subprocess.Popen(base, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 400
    while time.time() < deadline:
        try:
            torch.load(target, map_location="cpu", weights_only=True)  # complete, not half-written
            break
        except Exception:
            time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert target.is_file(), "the run never reached step 15"
    assert not (run / "summary.json").exists(), "the run finished before it was killed"
    _run(base + ["--resume"])  # no path: this run's last.ckpt (step 15 or later)
    _assert_same_run(full_run, run, 20)
    with open(run / "metrics.csv") as f:
        steps = {int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")}
    assert steps == set(range(20)), "metrics.csv lost the rows logged before the kill"


def test_resume_from_an_end_of_epoch_checkpoint(data_root, full_run, tmp_path):
    ckpt = full_run / "checkpoints" / "epoch0-step10.ckpt"
    assert ckpt.is_file(), sorted(p.name for p in (full_run / "checkpoints").iterdir())
    runs = tmp_path / "runs"
    _run([VTP, "train", "frozen_synth", *ARGS, f"data.root={data_root}", f"run.dir={runs}", "run.version=epoch_end",
          "--resume", str(ckpt)])
    _assert_same_run(full_run, runs / "frozen_synth" / "epoch_end", 20)


def test_ddp_resume_matches_uninterrupted_ddp(data_root, tmp_path):
    runs = tmp_path / "runs"
    ddp = [VTP, "train", "frozen_synth", *ARGS, f"data.root={data_root}", f"run.dir={runs}", "trainer.devices=2",
           "trainer.strategy=ddp"]
    _run(ddp + ["run.version=full"])
    full = runs / "frozen_synth" / "full"  # 40 clips / (2 ranks x 4) = 5 steps per epoch; saves at 3, 5, 6, 9, 10
    summary = json.loads((full / "summary.json").read_text())
    assert summary["world_size"] == 2 and len(set(summary["weights_sha256_per_rank"])) == 1
    _run(ddp + ["run.version=resumed", "--resume", str(full / "checkpoints" / "epoch1-step6.ckpt")])
    _assert_same_run(full, runs / "frozen_synth" / "resumed", 10)


def test_bare_resume_takes_the_newest_run_or_refuses(data_root, tmp_path, capsys):
    from vtp_bench.config import load_config
    from vtp_bench.train import resume_checkpoint

    runs = tmp_path / "runs"
    cfg = load_config("frozen_synth", [f"run.dir={runs}"])
    assert main(["train", "frozen_synth", f"run.dir={runs}", f"data.root={data_root}", "--resume"]) == 2
    assert "no run of frozen_synth" in capsys.readouterr().err
    for version in ("b_old", "a_new"):
        (runs / "frozen_synth" / version / "checkpoints").mkdir(parents=True)
        (runs / "frozen_synth" / version / "checkpoints" / "last.ckpt").write_bytes(b"x")
        time.sleep(0.02)
    assert resume_checkpoint(cfg, "last") == runs / "frozen_synth" / "a_new" / "checkpoints" / "last.ckpt"
    cfg_v = load_config("frozen_synth", [f"run.dir={runs}", "run.version=missing"])
    assert main(["train", "frozen_synth", f"run.dir={runs}", f"data.root={data_root}", "run.version=missing",
                 "--resume"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(Exception, match="no such checkpoint"):
        resume_checkpoint(cfg_v, str(tmp_path / "nope.ckpt"))
