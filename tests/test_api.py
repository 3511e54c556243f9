"""The Python API (``vtp_bench.load``), ``vtp-bench export`` and the trackers of ``run.loggers``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vtp_bench
from conftest import PACKAGE_METHODS
from helpers.runs import frozen_tiny
from vtp_bench.api import Model
from vtp_bench.cli import main
from vtp_bench.config import ConfigError, load_config, to_dict
from vtp_bench.data.manifest import read_manifest
from vtp_bench.data.synthetic import generate_synthetic
from vtp_bench.lit import VTPModule
from vtp_bench.registry import METHODS
from vtp_bench.testing import tiny_config

TINY = frozen_tiny("trainer.max_steps=1", "data.eval_batch_size=2")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    generate_synthetic(root / "synth", num_videos=40, seed=5, grounding_videos=1, progress=False)
    return root


@pytest.fixture(scope="module")
def run(data_root, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    assert main(["train", "frozen_synth", *TINY, f"data.root={data_root}", f"run.dir={runs}", "run.version=a"]) == 0
    return runs / "frozen_synth" / "a"


def test_load_encodes_video_files_as_embed_exports_them(run, data_root, tmp_path):
    ckpt = run / "checkpoints" / "last.ckpt"
    out = tmp_path / "emb.safetensors"
    assert main(["embed", "--ckpt", str(ckpt), "--dataset", "synth", "--data-root", str(data_root), "--out",
                 str(out)]) == 0
    meta, tensors = json.loads(out.with_suffix(".json").read_text()), load_file(str(out))
    rows = {r.video_id: r for r in read_manifest(data_root / "synth" / "test.jsonl")}
    ids = meta["video_ids"][:3]
    assert len(ids) == 3
    model = vtp_bench.load(ckpt)
    v = model.encode_video([data_root / "synth" / rows[i].path for i in ids], progress=False)
    torch.testing.assert_close(v.pooled, tensors["video.pooled"][:3], atol=1e-5, rtol=0)
    t = model.encode_text(["a red circle moves left", "two squares"])
    assert model.similarity(t, v).shape == (2, 3)
    assert torch.equal(model.similarity(t, v), model.method.similarity(t, v))


def test_export_then_load_eval_and_embed_give_the_same_numbers(run, data_root, tmp_path, capsys):
    ckpt = run / "checkpoints" / "last.ckpt"
    res = tmp_path / "r.json"
    assert main(["eval", "--ckpt", str(ckpt), "--dataset", "synth", "--data-root", str(data_root), "--out",
                 str(res)]) == 0
    folder = tmp_path / "export"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(folder), "--results", str(res)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.yaml", "model.safetensors"]
    card = (folder / "README.md").read_text()
    assert "frozen" in card and "t2v R@1" in card and "synth/test" in card
    assert main(["eval", "--ckpt", str(folder), "--dataset", "synth", "--data-root", str(data_root), "--out",
                 str(tmp_path / "r2.json")]) == 0
    a, b = json.loads(res.read_text()), json.loads((tmp_path / "r2.json").read_text())
    assert a["metrics"] == b["metrics"] and a["per_query"] == b["per_query"]
    video = torch.randn(2, 4, 3, 32, 32)
    e1, e2 = vtp_bench.load(ckpt).encode_video(video), vtp_bench.load(folder).encode_video(video)
    assert torch.equal(e1.pooled, e2.pooled)
    assert main(["export", "--ckpt", str(ckpt), "--out", str(folder)]) == 2  # not over an existing export
    assert "--overwrite" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "afile"), "--overwrite"]) == 2
    assert "is a file; an export is a folder" in capsys.readouterr().err
    assert main(["eval", "--ckpt", str(tmp_path), "--dataset", "synth", "--data-root", str(data_root)]) == 2
    assert "not one `vtp-bench export` wrote" in capsys.readouterr().err


@pytest.mark.parametrize("name", PACKAGE_METHODS)
def test_every_method_encodes_files_as_the_decoded_tensor(name, data_root):
    """Paths are decoded by the evaluation pipeline; the same clip given as a tensor gives the same embedding."""
    from vtp_bench.api import _Files
    from vtp_bench.data.dataset import DecodeOptions, EvalClipDataset
    from vtp_bench.data.transforms import VideoTransform

    cfg = tiny_config(name, f"data.root={data_root}")
    model = Model(VTPModule(to_dict(cfg)))
    paths = [p.resolve() for p in sorted((data_root / "synth").rglob("*.mp4"))[:2]]
    if {"region_boxes", "region_feats"} & set(METHODS.get(name).data_inputs(cfg.method)):
        with pytest.raises(ValueError, match="vtp-bench embed"):
            model.encode_video(paths)
        return
    d = cfg.data
    ds = EvalClipDataset(_Files(paths), model.num_frames, VideoTransform(d.img_size, train=False), d.eval_sampling,
                         DecodeOptions(d.decode_size, d.decode_threads))
    clips = torch.stack([ds[i]["video"] for i in range(2)])
    v_paths, v_tensor = model.encode_video(paths, progress=False), model.encode_video(clips)
    torch.testing.assert_close(v_paths.pooled, v_tensor.pooled, atol=1e-5, rtol=0)
    t = model.encode_text(["a blue square grows", "a red circle"])
    assert model.similarity(t, v_paths).shape == (2, 2)


def test_api_refuses_what_it_cannot_encode(run):
    model = vtp_bench.load(run / "checkpoints" / "last.ckpt")
    with pytest.raises(TypeError, match="list of paths"):
        model.encode_video("a.mp4")
    with pytest.raises(FileNotFoundError, match="do not exist"):
        model.encode_video(["/nonexistent/a.mp4"])
    with pytest.raises(ValueError, match=r"\[B, T, 3, H, W\]"):
        model.encode_video(torch.zeros(3, 32, 32))
    with pytest.raises(TypeError, match="list of strings"):
        model.encode_text("a caption")
    with pytest.raises(ValueError, match="at least one video"):
        model.encode_video([])
    with pytest.raises(ValueError, match="B >= 1"):
        model.encode_video(torch.zeros(0, 4, 3, 32, 32))
    with pytest.raises(TypeError, match="float frames"):
        model.encode_video(torch.zeros(1, 4, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="is a folder, not a video file"):
        model.encode_video([run])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            vtp_bench.load(run / "checkpoints" / "last.ckpt", device="cuda")


def test_python_m_runs_the_cli_with_the_package_version():
    r = subprocess.run([sys.executable, "-m", "vtp_bench", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"vtp-bench {vtp_bench.__version__}"
    from importlib.metadata import version

    assert vtp_bench.__version__ == version("vtp_bench")


# ---------------------------------------------------------------------------------------------- trackers
def test_unknown_logger_is_refused_when_the_config_loads():
    with pytest.raises(ConfigError, match="run.loggers"):
        load_config("frozen_synth", ["run.loggers=[csv,comet]"])


def test_wandb_and_mlflow_offline_get_config_curves_final_metrics_and_summary(data_root, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    # wandb's caches and temporary folders (tmp*wandb-artifacts, tmp*wandb-media) inside the test's folder, not /tmp
    for var, sub in (("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"), ("WANDB_ARTIFACT_DIR", "artifacts"),
                     ("WANDB_CONFIG_DIR", "config"), ("TMPDIR", "tmp")):
        (tmp_path / "wandb_home" / sub).mkdir(parents=True)
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / sub))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "wandb_home" / "tmp"))
    # imported only now: wandb makes its temporary folders when imported (tempfile.TemporaryDirectory at module level)
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["train", "frozen_synth", *TINY, f"data.root={data_root}", f"run.dir={tmp_path / 'runs'}",
                 "run.version=t", "run.loggers=[csv,wandb,mlflow]"]) == 0
    run_dir = tmp_path / "runs" / "frozen_synth" / "t"
    summary = json.loads((run_dir / "summary.json").read_text())
    # MLflow file store in the run dir: params (the resolved config), curves, final metrics, the summary artifact
    (mlrun,) = [p for p in (run_dir / "mlruns").glob("*/*") if (p / "metrics").is_dir()]
    final = (mlrun / "metrics" / "final" / "t2v" / "R1").read_text().split()  # MLflow drops the '@' of names
    assert float(final[1]) == pytest.approx(summary["val_metrics"]["t2v/R@1"])
    assert (mlrun / "params" / "config" / "method" / "name").read_text() == "frozen"
    assert (mlrun / "metrics" / "val" / "t2v").is_dir()  # the curves logged during training
    assert json.loads((mlrun / "artifacts" / "summary.json").read_text()) == summary
    # wandb offline run: the summary file kept with it
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert json.loads((offline / "files" / "summary.json").read_text()) == summary
    assert (run_dir / "metrics.csv").is_file() and not (run_dir / "tensorboard").exists()


def test_the_docs_example_runs(run, data_root, tmp_path, monkeypatch, capsys):
    """docs/python_api.md's Python block, run where its paths exist."""
    import re
    import shutil

    text = (Path(__file__).parents[1] / "docs" / "python_api.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    (tmp_path / "data").symlink_to(data_root)
    target = tmp_path / "runs" / "frozen_synth" / "version_0"
    target.parent.mkdir(parents=True)
    shutil.copytree(run, target)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/python_api.md", "exec"), {})
    assert capsys.readouterr().out.count(" -> data/synth/videos/") == 2


def test_an_export_failing_half_way_leaves_the_previous_export_whole(run, tmp_path, monkeypatch, capsys):
    """The files go to a staging folder renamed into place: a failure (here while writing the model card) leaves the
    previous export as it was, and no staging folder behind."""
    import vtp_bench.export as export_mod

    ckpt = run / "checkpoints" / "last.ckpt"
    folder = tmp_path / "exp"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(folder)]) == 0
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert oct(folder.stat().st_mode & 0o777) == oct(0o777 & ~_umask_now())

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_mod, "model_card", broken)
    with pytest.raises(OSError):
        export_mod.export(ckpt, folder, overwrite=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def _umask_now() -> int:
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    return mask
