"""The wheel, installed into a fresh virtual environment, works from an empty directory (``make test-slow``: it
installs torch and the other dependencies, a minute or two from a local package index)."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = """
import json, vtp_bench
from safetensors.torch import load_file
from vtp_bench.data.manifest import read_manifest
meta, rows = json.load(open("emb.json")), {r.video_id: r for r in read_manifest("data/synth/test.jsonl")}
model = vtp_bench.load("runs/frozen_synth/version_0/checkpoints/last.ckpt")
v = model.encode_video(["data/synth/" + rows[i].path for i in meta["video_ids"][:3]], progress=False)
assert (v.pooled - load_file("emb.safetensors")["video.pooled"][:3]).abs().max() < 1e-5
assert tuple(model.similarity(model.encode_text(["a", "b"]), v).shape) == (2, 3)
from vtp_bench.testing import tiny_config
assert tiny_config("frozen").data.img_size == 32  # the CPU-test sizes ship in the wheel (experiments/tiny)
print("api ok")
"""


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_from_an_empty_directory(tmp_path):
    def run(*cmd: str, cwd: Path = tmp_path) -> str:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{cmd}: {r.stdout[-2000:]}{r.stderr[-2000:]}"
        return r.stdout

    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(ROOT))
    (wheel,) = (tmp_path / "dist").glob("vtp_bench-*.whl")
    venv.create(tmp_path / "env", with_pip=True)
    py, cli = str(tmp_path / "env" / "bin" / "python"), str(tmp_path / "env" / "bin" / "vtp-bench")
    run(py, "-m", "pip", "install", "-q", str(wheel))
    work = tmp_path / "empty"
    work.mkdir()
    assert "miles_webvid" in run(cli, "list", cwd=work)
    run(cli, "data", "synth", "--out", "data/synth", "--videos", "60", cwd=work)
    run(cli, "train", "frozen_synth", "trainer.max_steps=1", "data.num_workers=0", "trainer.enable_progress_bar=false",
        cwd=work)
    run(cli, "embed", "--ckpt", "runs/frozen_synth/version_0/checkpoints/last.ckpt", "--dataset", "synth", "--out",
        "emb.safetensors", cwd=work)
    assert "api ok" in run(py, "-c", CHECK, cwd=work)
    assert run(py, "-m", "vtp_bench", "--version", cwd=work).startswith("vtp-bench ")
