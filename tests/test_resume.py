"""Resuming reaches exactly the weights and metrics of an uninterrupted run (deterministic mode, CPU):

- a run killed with SIGKILL mid-epoch, resumed with a bare ``--resume`` (its own ``last.ckpt``);
- a run resumed from an end-of-epoch checkpoint, also with ``trainer.max_steps`` (iteration-based training);
- SIGTERM saves ``last.ckpt`` at the current step, writes the summary and exits 143; resuming from it is exact;
- a bare ``--resume`` continues with the run's own config (overrides refused or recorded);
- ``run.keep_checkpoints=N`` keeps the newest N epoch/step checkpoints besides ``last.ckpt``;
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
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import tiny_overrides
from helpers.runs import RESUME_ARGS, VTP, assert_same_run
from vtp_bench.cli import main
from vtp_bench.data.synthetic import generate_synthetic

# the default path: end-of-epoch checkpoints only, training bounded by max_steps (40 clips / batch 10 = 4 steps per
# epoch; validation every 2nd epoch, at step 7); no workers, to keep the runs short
STEPS = [*tiny_overrides("frozen"), "trainer.max_epochs=10", "trainer.max_steps=9", "trainer.deterministic=true",
         "data.batch_size=10", "data.num_workers=0", "optim.warmup_steps=2", "optim.scheduler=cosine",
         "run.keep_checkpoints=all"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VTP_RUN_VERSION", "RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(args: list[str]) -> None:
    r = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # the training loader is resumable in Lightning's sense (state_dict / load_state_dict), so a resume mid-epoch
    # draws no "not resumable" warning (nothing filters it)
    assert "not resumable" not in r.stdout + r.stderr, r.stderr[-3000:]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    generate_synthetic(root / "synth", num_videos=50, seed=9, grounding_videos=0, progress=False)
    return root


def _reference_run(args: list[str], data_root: Path, runs: Path) -> Path:
    """An uninterrupted run of ``args``: what an interrupted and resumed one must equal."""
    _run([VTP, "train", "frozen_synth", *args, f"data.root={data_root}", f"run.dir={runs}", "run.version=full"])
    return runs / "frozen_synth" / "full"


@pytest.fixture(scope="module")
def full_run(data_root, tmp_path_factory) -> Path:
    """The uninterrupted reference: 40 training clips / batch 4 = 10 steps per epoch, 2 epochs."""
    return _reference_run(RESUME_ARGS, data_root, tmp_path_factory.mktemp("runs"))


def _train_steps(path: Path) -> set[int]:
    """The steps with a training-loss row in a (possibly still growing) metrics.csv."""
    try:
        with open(path) as f:
            return {int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss") and r.get("step")}
    except (OSError, ValueError, KeyError):
        return set()


def test_kill_and_bare_resume_matches_uninterrupted(data_root, full_run, tmp_path):
    base = [VTP, "train", "frozen_synth", *RESUME_ARGS, f"data.root={data_root}", f"run.dir={tmp_path / 'runs'}",
            "run.version=killed"]
    run = tmp_path / "runs" / "frozen_synth" / "killed"
    target = run / "checkpoints" / "epoch1-step15.ckpt"  # kill after the checkpoint of step 15 (mid-epoch 1)
    proc = subprocess.Popen(base, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(target, proc)  # complete, not half-written
    # Lightning writes a step's metrics row just after that step's checkpoint: kill once the row is there, so the
    # test checks that rows written before a kill survive (a kill inside that window loses the row: in the notes)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and 14 not in _train_steps(run / "metrics.csv"):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert target.is_file(), "the run never reached step 15"
    assert not (run / "summary.json").exists(), "the run finished before it was killed"
    _run(base + ["--resume"])  # no path: this run's last.ckpt (step 15 or later)
    assert_same_run(full_run, run, 20)
    assert _train_steps(run / "metrics.csv") == set(range(20)), "metrics.csv lost the rows logged before the kill"


def test_resume_from_an_end_of_epoch_checkpoint(data_root, full_run, tmp_path):
    ckpt = full_run / "checkpoints" / "epoch0-step10.ckpt"
    assert ckpt.is_file(), sorted(p.name for p in (full_run / "checkpoints").iterdir())
    runs = tmp_path / "runs"
    _run([VTP, "train", "frozen_synth", *RESUME_ARGS, f"data.root={data_root}", f"run.dir={runs}",
          "run.version=epoch_end", "--resume", str(ckpt)])
    assert_same_run(full_run, runs / "frozen_synth" / "epoch_end", 20)


def test_ddp_resume_matches_uninterrupted_ddp(data_root, tmp_path):
    runs = tmp_path / "runs"
    ddp = [VTP, "train", "frozen_synth", *RESUME_ARGS, f"data.root={data_root}", f"run.dir={runs}", "trainer.devices=2",
           "trainer.strategy=ddp"]
    _run(ddp + ["run.version=full"])
    full = runs / "frozen_synth" / "full"  # 40 clips / (2 ranks x 4) = 5 steps per epoch; saves at 3, 5, 6, 9, 10
    summary = json.loads((full / "summary.json").read_text())
    assert summary["world_size"] == 2 and len(set(summary["weights_sha256_per_rank"])) == 1
    _run(ddp + ["run.version=resumed", "--resume", str(full / "checkpoints" / "epoch1-step6.ckpt")])
    assert_same_run(full, runs / "frozen_synth" / "resumed", 10)


def test_bare_resume_takes_the_newest_run_or_refuses(data_root, tmp_path, capsys):
    from vtp_bench.config import load_config
    from vtp_bench.train import resume_checkpoint

    runs = tmp_path / "runs"
    cfg = load_config("frozen_synth", [f"run.dir={runs}"])
    assert main(["train", "frozen_synth", f"run.dir={runs}", f"data.root={data_root}", "--resume"]) == 2
    assert "no run of frozen_synth" in capsys.readouterr().err
    for version in ("b_old", "a_new"):
        (runs / "frozen_synth" / version / "checkpoints").mkdir(parents=True)
        torch.save({"state_dict": {}, "hyper_parameters": {}}, runs / "frozen_synth" / version / "checkpoints" /
                   "last.ckpt")  # a readable (empty) training checkpoint
        time.sleep(0.02)
    assert resume_checkpoint(cfg, "last") == runs / "frozen_synth" / "a_new" / "checkpoints" / "last.ckpt"
    cfg_v = load_config("frozen_synth", [f"run.dir={runs}", "run.version=missing"])
    assert main(["train", "frozen_synth", f"run.dir={runs}", f"data.root={data_root}", "run.version=missing",
                 "--resume"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(Exception, match="no such checkpoint"):
        resume_checkpoint(cfg_v, str(tmp_path / "nope.ckpt"))


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _logged(run: Path) -> tuple[dict[int, str], list[int]]:
    """{step: epoch} of the training-loss rows (the last row per step, as a reader keeps) and the validation steps."""
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return ({int(r["step"]): r["epoch"] for r in rows if r.get("train/loss")},
            sorted(int(r["step"]) for r in rows if r.get("val/t2v/R@1")))


def _wait_for(path: Path, proc: subprocess.Popen, step: int = 0, timeout: float = 400) -> None:
    """Until ``path`` is a complete checkpoint of ``step`` or later (or the process ended)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if torch.load(path, map_location="cpu", weights_only=True)["global_step"] >= step:
                return
        except Exception:
            pass
        time.sleep(0.05)


@pytest.fixture(scope="module")
def steps_run(data_root, tmp_path_factory) -> Path:
    """The uninterrupted reference of the max_steps runs: 9 steps, checkpoints at the end of epochs 0 and 1."""
    return _reference_run(STEPS, data_root, tmp_path_factory.mktemp("steps"))


def test_resume_from_an_end_of_epoch_checkpoint_with_max_steps(data_root, steps_run, tmp_path):
    """With max_steps, Lightning re-entered the finished epoch: one extra batch logged as epoch 0, epoch 1 from its
    first batch again, other weights and validation one step late. Now the resumed run is the uninterrupted one."""
    ckpt = steps_run / "checkpoints" / "epoch0-step4.ckpt"
    assert ckpt.is_file(), sorted(p.name for p in (steps_run / "checkpoints").iterdir())
    runs = tmp_path / "runs"
    _run([VTP, "train", "frozen_synth", *STEPS, f"data.root={data_root}", f"run.dir={runs}", "run.version=resumed",
          "--resume", str(ckpt)])
    resumed = runs / "frozen_synth" / "resumed"
    (full_steps, full_val), (steps, val) = _logged(steps_run), _logged(resumed)
    # epoch 1 ends at step 7 (validated); max_steps=9 ends mid-epoch: the final weights are validated at step 9
    assert full_val == [7, 9] and val == full_val, "validation logged at another step"
    assert steps == {k: v for k, v in full_steps.items() if k >= 4}, "steps logged with other epochs or numbers"
    assert_same_run(steps_run, resumed, 9)


def _interrupted(data_root: Path, tmp_path: Path, version: str, sig: int, code: int) -> tuple[Path, Path]:
    """A STEPS run sent ``sig`` after its first epoch: it exits with ``code``, its summary says which signal, and
    last.ckpt is at the step it stopped at. Returns (run.dir, run dir)."""
    runs = tmp_path / "runs"
    run = runs / "frozen_synth" / version
    proc = subprocess.Popen([VTP, "train", "frozen_synth", *STEPS, f"data.root={data_root}", f"run.dir={runs}",
                             f"run.version={version}"], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    _wait_for(run / "checkpoints" / "epoch0-step4.ckpt", proc)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == code, out[-3000:]
    summary = _summary(run)
    assert summary["interrupted"] == signal.Signals(sig).name and 4 <= summary["global_step"] < 9, summary
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == summary["global_step"], "last.ckpt is not at the step the run stopped at"
    assert "--resume" in out
    return runs, run


def test_sigterm_saves_last_and_resumes_exactly(data_root, steps_run, tmp_path):
    """SIGTERM (a scheduler's warning before the kill): last.ckpt at the step reached, summary marked interrupted,
    exit 143; a bare --resume from it ends with the uninterrupted run's weights."""
    runs, run = _interrupted(data_root, tmp_path, "term", signal.SIGTERM, 143)
    _run([VTP, "train", "frozen_synth", f"run.dir={runs}", "run.version=term", "--resume"])
    assert _summary(run)["interrupted"] is None
    assert _summary(run)["weights_sha256_per_rank"] == _summary(steps_run)["weights_sha256_per_rank"]
    assert_same_run(steps_run, run, 9)


def test_ctrl_c_stops_like_sigterm_with_exit_130(data_root, tmp_path):
    """The first Ctrl-C (SIGINT) is routed as SIGTERM: the step finishes, last.ckpt and the summary are written and
    the resume command printed (it used to stop with no summary and last.ckpt at the previous epoch end)."""
    _interrupted(data_root, tmp_path, "ctrlc", signal.SIGINT, 130)


def test_bare_resume_after_kill_keeps_the_run_config(data_root, steps_run, tmp_path):
    """A bare --resume (no overrides) after SIGKILL trains to the run's own max_steps, not the experiment's, and
    leaves its config.yaml as it was."""
    runs = tmp_path / "runs"
    run = runs / "frozen_synth" / "killed"
    proc = subprocess.Popen([VTP, "train", "frozen_synth", *STEPS, f"data.root={data_root}", f"run.dir={runs}",
                             "run.version=killed"], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(run / "checkpoints" / "last.ckpt", proc, step=4)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "summary.json").exists(), "the run finished before it was killed"
    config = (run / "config.yaml").read_bytes()
    _run([VTP, "train", "frozen_synth", f"run.dir={runs}", "run.version=killed", "--resume"])
    assert (run / "config.yaml").read_bytes() == config
    assert_same_run(steps_run, run, 9)
    records = [json.loads(line) for line in (run / "resumes.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["changed"] == {}, records


def test_resume_refuses_overrides_that_change_the_run(tmp_path, capsys):
    """Refused with the keys named (nothing trains); the keys a resume may change are applied and returned."""
    from vtp_bench.config import load_config
    from vtp_bench.train import resumed_config

    runs = tmp_path / "runs"
    run = runs / "frozen_synth" / "r"
    (run / "checkpoints").mkdir(parents=True)
    # readable but empty: the config comes from config.yaml
    torch.save({"state_dict": {}, "hyper_parameters": {}}, run / "checkpoints" / "last.ckpt")
    started = [*tiny_overrides("frozen"), "trainer.max_steps=12", f"run.dir={runs}", "run.version=r"]
    (run / "config.yaml").write_text(OmegaConf.to_yaml(load_config("frozen_synth", started)))
    assert main(["train", "frozen_synth", f"run.dir={runs}", "run.version=r", "seed=5", "optim.lr=0.1",
                 "--resume"]) == 2
    err = capsys.readouterr().err
    assert "seed (0 -> 5)" in err and "optim.lr" in err, err
    assert "may change only trainer.max_steps" in err, err  # and says what a resume may change
    ckpt = run / "checkpoints" / "last.ckpt"
    overrides = ["trainer.max_steps=20", "data.num_workers=3", f"run.dir={runs}"]
    cfg, changes = resumed_config(load_config("frozen_synth", overrides), ckpt, overrides)
    assert changes == {"trainer.max_steps": [12, 20], "data.num_workers": [0, 3]}
    assert cfg.trainer.max_steps == 20 and cfg.data.img_size == 32 and cfg.method.video.depth == 1
    cfg, changes = resumed_config(load_config("frozen_synth", [f"run.dir={runs}"]), ckpt, [f"run.dir={runs}"])
    assert changes == {} and cfg.trainer.max_steps == 12 and cfg.data.batch_size == 4


def test_keep_checkpoints_keeps_the_newest(data_root, tmp_path):
    """run.keep_checkpoints=N: last.ckpt plus the N newest epoch/step checkpoints (default 3); bad values refused."""
    from vtp_bench.config import ConfigError, load_config

    assert load_config("frozen_synth").run.keep_checkpoints == 3
    assert load_config("frozen_synth", ["run.keep_checkpoints=last"]).run.keep_checkpoints == "last"
    for bad in ("-1", "some", "1.5"):
        with pytest.raises(ConfigError, match="run.keep_checkpoints"):
            load_config("frozen_synth", [f"run.keep_checkpoints={bad}"])
    runs = tmp_path / "runs"
    assert main(["train", "frozen_synth", *tiny_overrides("frozen"), "trainer.max_steps=4", "data.batch_size=10",
                 "run.ckpt_every_n_steps=1", "run.keep_checkpoints=2", f"data.root={data_root}", f"run.dir={runs}",
                 "run.version=keep"]) == 0
    names = sorted(p.name for p in (runs / "frozen_synth" / "keep" / "checkpoints").iterdir())
    assert names == ["epoch0-step3.ckpt", "epoch0-step4.ckpt", "last.ckpt"], names
