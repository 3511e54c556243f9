"""Distributed correctness on CPU (gloo): gradients, evaluation, launchers.

- 2 processes on half batches, gradients averaged as DDP does == 1 process on the whole batch, for every
  registered method (fp64); and the per-GPU-negatives mode is shown to differ (the test can fail).
- `vtp-bench eval --devices 2` on a test set of odd size == `--devices 1`, exactly.
- `vtp-bench train ... trainer.devices=2 trainer.strategy=ddp` runs, and two torchrun "nodes" on
  loopback train one run together.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import PACKAGE_METHODS, fake_batch, tiny_config
from helpers.runs import TRAIN_TINY, VTP, run_clean
from vtp_bench.lit import build_method


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _method(name: str, gather: str):
    torch.manual_seed(0)
    cfg = tiny_config(name, f"loss.gather={gather}")
    return build_method(cfg).double().eval(), cfg  # eval: no dropout, so both runs are deterministic


def _batch(cfg, n: int) -> dict:
    return fake_batch(cfg, n, torch.float64)


def _local(batch: dict, rank: int, split: tuple[int, ...]) -> dict:
    """This rank's rows; ``split`` gives every rank's count (unequal when unreadable videos were skipped)."""
    start = sum(split[:rank])
    sl = slice(start, start + split[rank])
    return {k: (v[sl] if isinstance(v, (torch.Tensor, list)) else split[rank]) for k, v in batch.items()}


def _grads(method) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in method.named_parameters() if p.grad is not None}


SPLITS = {"equal": (4, 4), "uneven": (5, 3)}  # uneven: one rank lost rows to unreadable videos


def _worker(rank: int, world: int, port: int, out: str) -> None:
    """One process group for every (method, split, gather): the gradients averaged as DDP's reducer does, or the
    error a method raised (so one method's failure fails its own tests only)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    results: dict = {}
    for name in PACKAGE_METHODS:
        for split_id, split in SPLITS.items():
            for gather in ("global", "none"):
                try:
                    method, cfg = _method(name, gather)
                    loss = sum(method.losses(_local(_batch(cfg, sum(split)), rank, split)).values())
                    loss.backward()
                    grads = _grads(method)
                    for g in grads.values():
                        dist.all_reduce(g)
                        g /= world
                    results[name, split_id, gather] = grads
                except Exception as e:  # noqa: BLE001 - reported by the method's test
                    results[name, split_id, gather] = f"{type(e).__name__}: {e}"
                dist.barrier()
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_grads(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("grads") / "grads.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return torch.load(out)


@pytest.mark.parametrize("split", list(SPLITS))
@pytest.mark.parametrize("name", PACKAGE_METHODS)
def test_two_process_gradients_equal_one_process(name, split, two_process_grads):
    """Two processes on their rows of the batch, gradients averaged over ranks == one process on the whole batch;
    with per-GPU negatives (``loss.gather=none``) they differ, so the comparison can fail."""
    method, cfg = _method(name, "global")
    sum(method.losses(_batch(cfg, sum(SPLITS[split]))).values()).backward()
    reference = _grads(method)
    assert reference, "no gradients"
    results = {g: two_process_grads[name, split, g] for g in ("global", "none")}
    for g, r in results.items():
        assert not isinstance(r, str), f"loss.gather={g} on 2 processes raised {r}"
    assert results["global"].keys() == reference.keys()
    for k, ref in reference.items():
        assert torch.allclose(results["global"][k], ref, rtol=1e-6, atol=1e-9), k
    assert any(not torch.allclose(results["none"][k], ref, rtol=1e-6, atol=1e-9) for k, ref in reference.items())


@pytest.fixture(scope="module")
def ddp_data(tmp_path_factory) -> Path:
    from vtp_bench.data.manifest import read_manifest
    from vtp_bench.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("ddp")
    generate_synthetic(root / "synth", num_videos=50, seed=5, grounding_videos=0, progress=False)
    bad = read_manifest(root / "synth" / "train.jsonl")[7]  # one rank's batch will be a row short
    (root / "synth" / bad.path).write_bytes(b"not an mp4")
    return root


def _one_run_dir(runs: Path, exp: str = "frozen_synth") -> Path:
    """The launch wrote exactly one run directory (no rank chose a version of its own); returns it."""
    dirs = sorted(p for p in (runs / exp).iterdir() if p.is_dir())
    assert len(dirs) == 1, f"expected one run dir, found {[d.name for d in dirs]}"
    return dirs[0]


def _state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def test_ddp_train_cli_and_distributed_eval_equal_single(ddp_data, tmp_path):
    """``trainer.devices=2`` without ``run.version``: the launching process picks the version, the rank that
    Lightning starts learns it, and one run dir holds everything."""
    runs = tmp_path / "runs"
    r = run_clean([VTP, "train", "frozen_synth", *TRAIN_TINY, f"data.root={ddp_data}", f"run.dir={runs}",
                   "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_steps=-1"], tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "rank 1/2" in r.stdout + r.stderr
    run = _one_run_dir(runs)
    # a full epoch: the corrupt clip was skipped on one rank, gathered into the run's report
    summary = json.loads((run / "summary.json").read_text())
    assert summary["skipped_videos"] == 1 and summary["global_step"] == 5
    assert summary["world_size"] == 2 and len(set(summary["weights_sha256_per_rank"])) == 1
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    res = {}
    for n in (1, 2):
        out = tmp_path / f"eval{n}.json"
        r = run_clean([VTP, "eval", "--ckpt", str(ckpt), "--dataset", "synth", "--split", "test", "--out",
                       str(out), "--data-root", str(ddp_data), "--accelerator", "cpu", "--devices", str(n)], tmp_path)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        res[n] = json.loads(out.read_text())
    assert res[1]["num_videos"] == 5  # odd: a padded sampler would duplicate one video
    assert res[2]["devices"] == 2
    assert res[2]["num_videos"] == res[1]["num_videos"] and res[2]["num_queries"] == res[1]["num_queries"]
    assert res[2]["metrics"] == res[1]["metrics"]


# fp64 and a frozen (eval-mode) text tower: no dropout, so one process on the global batch is the exact reference
EXACT = ["trainer.precision=64-true", "method.text.freeze=true", "trainer.max_steps=-1", "optim.lr=1e-3",
         "optim.weight_decay=0.01"]


def test_two_nodes_with_torchrun_train_one_model(ddp_data, tmp_path):
    """Two torchrun "nodes" on loopback, launched as users do and without ``run.version``: one run dir, identical
    weights on both nodes, and the weights of one process trained on the same global batch (8 = 2 x 4)."""
    port = str(_free_port())
    runs = tmp_path / "runs"
    args = [*TRAIN_TINY, *EXACT, f"data.root={ddp_data}", f"run.dir={runs}", "trainer.num_nodes=2",
            "trainer.devices=1", "trainer.strategy=ddp"]
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
               f"--node_rank={node}", "--master_addr=127.0.0.1", f"--master_port={port}",
               "-m", "vtp_bench.cli", "train", "frozen_synth", *args]
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "VTP_RUN_VERSION")}
        env["PYTHONUNBUFFERED"] = "1"
        env["TMPDIR"] = str(tmp_path / f".tmp{node}")  # torchrun's torchelastic_* folders: in the test's folder
        (tmp_path / f".tmp{node}").mkdir(exist_ok=True)
        procs.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    assert "rank 0/2" in outs[0] and "node 0" in outs[0]
    assert "rank 1/2" in outs[1] and "node 1" in outs[1]
    run = _one_run_dir(runs)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 5
    digests = summary["weights_sha256_per_rank"]
    assert len(digests) == 2 and digests[0] == digests[1], "the two nodes ended with different weights"

    single = tmp_path / "single"
    r = run_clean([VTP, "train", "frozen_synth", *TRAIN_TINY, *EXACT, f"data.root={ddp_data}",
                   f"run.dir={single}", "data.batch_size=8"], tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ref_run = _one_run_dir(single)
    # both trained (every trainable tensor moved), on the same 5 global batches
    for s in (summary, json.loads((ref_run / "summary.json").read_text())):
        assert s["trainable_params_unchanged"] == [] and s["global_step"] == 5
    ref, got = _state(ref_run), _state(run)
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.allclose(got[k], ref[k], rtol=1e-9, atol=1e-11), k
