"""Nothing lost, nothing silently wrong: every file vtp_bench writes is atomic, and ``--out`` is never replaced
silently.

- A write that fails half-way (a disk that fills during the write: ``open`` patched so that writes under a folder
  store half the bytes, then raise ENOSPC) leaves the previous file byte-identical, no temporary file behind, and
  an error naming the file and the cause: results JSON (``vtp-bench eval --out``), manifest, checkpoint (the
  Trainer's CheckpointIO), shards and their index.
- The same with a real full disk: a 64 KiB tmpfs mounted inside ``unshare -rm`` (skipped where not permitted).
- ``eval --out`` / ``embed --out`` refuse an existing file before any scoring unless ``--overwrite``; results that
  another run wrote meanwhile are kept, and these go beside them (``<stem>.<n>.json``).
- Files get the mode ``open(path, "w")`` gives (safetensors' own writer makes 0600 files).
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from conftest import tiny_config
from helpers import oracle
from helpers.oracle import oracle_checkpoint
from vtp_bench.cli import main
from vtp_bench.data.manifest import ManifestRow, read_manifest, write_manifest
from vtp_bench.data.synthetic import generate_synthetic


class _HalfWay:
    """A file whose writes store half the bytes, then fail as a full disk does."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def write(self, data: Any) -> int:
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self) -> _HalfWay:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


@pytest.fixture
def disk_full(monkeypatch) -> Callable[[Path], None]:
    """``disk_full(folder)``: from now on, files opened for writing under ``folder`` fail half-way."""
    real_open = builtins.open

    def arm(folder: Path) -> None:
        root = os.path.abspath(folder) + os.sep

        def half_way_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            f = real_open(file, mode, *args, **kwargs)
            writing = any(c in mode for c in "wax+")
            if writing and isinstance(file, (str, os.PathLike)) and os.path.abspath(file).startswith(root):
                return _HalfWay(f)
            return f

        monkeypatch.setattr(builtins, "open", half_way_open)
        monkeypatch.setattr(io, "open", half_way_open)  # Path.write_text opens through io.open

    return arm


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Any]:
    """A small synthetic dataset and an oracle checkpoint on its test split (evaluates in a second)."""
    root = tmp_path_factory.mktemp("atomic")
    generate_synthetic(root / "synth", num_videos=8, seed=3, splits=(2, 2, 4), grounding_videos=0, progress=False)
    rows = read_manifest(root / "synth" / "test.jsonl")
    vids = list(dict.fromkeys(r.video_id for r in rows))
    codes = {v: i for i, v in enumerate(vids)}
    ckpt = oracle_checkpoint(root / "o.ckpt", len(vids), video_codes=codes,
                             text_codes={r.text: codes[r.video_id] for r in rows})
    return {"root": root, "ckpt": ckpt, "common": ["--ckpt", str(ckpt), "--dataset", "synth", "--data-root",
                                                   str(root), "--accelerator", "cpu"]}


# --- a write that fails half-way ---------------------------------------------------------------------------------
def test_eval_out_failing_half_way_leaves_no_torn_results(data, tmp_path, disk_full, capsys):
    out = tmp_path / "res" / "r.json"
    out.parent.mkdir()
    disk_full(out.parent)
    assert main(["eval", *data["common"], "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "No space left on device" in err
    assert list(out.parent.iterdir()) == []  # no 0-byte / half results file, no temporary file


def test_eval_overwrite_failing_half_way_keeps_the_previous_results(data, tmp_path, disk_full, capsys):
    out = tmp_path / "res" / "r.json"
    assert main(["eval", *data["common"], "--out", str(out)]) == 0
    before = _snapshot(out.parent)
    disk_full(out.parent)
    assert main(["eval", *data["common"], "--out", str(out), "--overwrite"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert _snapshot(out.parent) == before
    assert json.loads(out.read_text())["metrics"]["t2v/R@1"] == 100.0


def test_manifest_failing_half_way_keeps_the_previous_manifest(tmp_path, disk_full):
    path = tmp_path / "m" / "test.jsonl"
    rows = [ManifestRow(video_id=f"v{i}", path=f"v{i}.mp4", text=f"caption {i}", text_id=f"t{i}", split="test")
            for i in range(3)]
    write_manifest(path, rows)
    before = _snapshot(path.parent)
    disk_full(path.parent)
    with pytest.raises(OSError, match="No space left on device") as e:
        write_manifest(path, rows[:2])
    assert str(path) in str(e.value) and e.value.errno == errno.ENOSPC
    assert _snapshot(path.parent) == before


def test_checkpoint_failing_half_way_keeps_the_previous_checkpoint(tmp_path, disk_full):
    """The Trainer that ``train`` builds writes checkpoints through AtomicCheckpointIO."""
    from vtp_bench.atomic import AtomicCheckpointIO
    from vtp_bench.train import build_trainer

    trainer = build_trainer(tiny_config("frozen"), tmp_path / "run")
    io_ = trainer.strategy.checkpoint_io
    assert isinstance(io_, AtomicCheckpointIO)
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    io_.save_checkpoint({"state_dict": {"w": torch.arange(1000.0)}, "global_step": 1}, path)
    before = _snapshot(path.parent)
    disk_full(path.parent)
    with pytest.raises(OSError, match="No space left on device") as e:
        io_.save_checkpoint({"state_dict": {"w": torch.zeros(1000)}, "global_step": 2}, path)
    assert str(path) in str(e.value)
    assert _snapshot(path.parent) == before
    assert io_.load_checkpoint(path)["global_step"] == 1


def test_shards_failing_half_way_keep_the_previous_shards_and_index(data, tmp_path, disk_full):
    pytest.importorskip("webdataset")
    from vtp_bench.data.shard_write import write_shards

    out = tmp_path / "shards"
    index = write_shards(data["root"] / "synth" / "test.jsonl", out, shard_size=2)
    assert [s["samples"] for s in index["shards"]] == [2, 2]
    before = _snapshot(out)
    disk_full(out)
    with pytest.raises(OSError, match="No space left on device"):
        write_shards(data["root"] / "synth" / "test.jsonl", out, shard_size=3)
    assert _snapshot(out) == before


# --- a real full disk ---------------------------------------------------------------------------------------------
_REAL_DISK_FULL = r"""
import json, os, sys
from pathlib import Path
import torch
mnt, run, ckpt, root = map(Path, sys.argv[1:5])
from vtp_bench.cli import main
from vtp_bench.data.manifest import ManifestRow, write_manifest
from vtp_bench.testing import tiny_config
from vtp_bench.train import build_trainer

def files():
    return {p.name: p.read_bytes() for p in sorted(mnt.iterdir())}

rows = [ManifestRow(video_id=f"v{i}", path=f"v{i}.mp4", text=f"caption {i} " + "x" * 100, text_id=f"t{i}",
                    split="test") for i in range(300)]
write_manifest(mnt / "m.jsonl", rows[:3])
io_ = build_trainer(tiny_config("frozen"), run).strategy.checkpoint_io
io_.save_checkpoint({"w": torch.zeros(10)}, mnt / "last.ckpt")
with open(mnt / "filler", "wb", buffering=0) as f:  # fill the disk
    try:
        while True:
            f.write(b"\0" * 4096)
    except OSError:
        pass
before, report = files(), {}
for name, write in [("manifest", lambda: write_manifest(mnt / "m.jsonl", rows)),
                    ("checkpoint", lambda: io_.save_checkpoint({"w": torch.zeros(100_000)}, mnt / "last.ckpt"))]:
    try:
        write()
        report[name] = "written"
    except Exception as e:
        report[name] = str(e)
report["eval_rc"] = main(["eval", "--ckpt", str(ckpt), "--dataset", "synth", "--data-root", str(root),
                          "--accelerator", "cpu", "--out", str(mnt / "r.json")])
report["intact"] = files() == before
report["files"] = sorted(files())
print("REPORT " + json.dumps(report))
"""


def _can_mount_tmpfs(where: Path) -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    r = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs '{where}'"],
                       capture_output=True, timeout=30)
    return r.returncode == 0


def test_real_full_disk_leaves_the_previous_files_intact(data, tmp_path, capsys):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not _can_mount_tmpfs(mnt):
        pytest.skip("unshare -rm / mounting a tmpfs is not permitted here")
    env = {**os.environ, "VTP_PLUGINS": str(Path(oracle.__file__).resolve())}
    script = f"mount -t tmpfs -o size=64k tmpfs '{mnt}' && exec \"$0\" -c \"$1\" \"$2\" \"$3\" \"$4\" \"$5\""
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script, sys.executable, _REAL_DISK_FULL, str(mnt),
                        str(tmp_path / "run"), str(data["ckpt"]), str(data["root"])],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    lines = [x for x in r.stdout.splitlines() if x.startswith("REPORT ")]
    assert r.returncode == 0 and lines, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads(lines[-1][len("REPORT "):])
    for name, file in (("manifest", "m.jsonl"), ("checkpoint", "last.ckpt")):
        assert "No space left on device" in report[name] and str(mnt / file) in report[name], report
    assert report["eval_rc"] == 2 and "No space left on device" in r.stderr and str(mnt / "r.json") in r.stderr
    assert report["intact"] and report["files"] == ["filler", "last.ckpt", "m.jsonl"], report


# --- never replace another run's results silently ----------------------------------------------------------------
def test_eval_refuses_an_existing_out_before_scoring(data, tmp_path, monkeypatch, capsys):
    import vtp_bench.evaluate as ev

    out = tmp_path / "r.json"
    out.write_text('{"another": "run"}')

    def must_not_run(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the evaluation ran although its --out would be refused")

    with monkeypatch.context() as m:
        m.setattr(ev, "module_from_checkpoint", must_not_run)
        assert main(["eval", *data["common"], "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == '{"another": "run"}'
    assert main(["eval", *data["common"], "--out", str(out), "--overwrite"]) == 0
    assert json.loads(out.read_text())["metrics"]["t2v/R@1"] == 100.0


def test_eval_results_written_meanwhile_are_kept_and_these_go_beside(data, tmp_path, monkeypatch, capsys):
    """Two evaluations into one --out: the one that finishes second writes r.1.json and says so."""
    import vtp_bench.evaluate as ev

    out = tmp_path / "r.json"
    record = ev.training_record

    def other_run_finishes_first(*args: Any, **kwargs: Any) -> Any:
        out.write_text('{"another": "run"}')
        return record(*args, **kwargs)

    monkeypatch.setattr(ev, "training_record", other_run_finishes_first)
    assert main(["eval", *data["common"], "--out", str(out)]) == 0
    captured = capsys.readouterr()
    beside = tmp_path / "r.1.json"
    assert out.read_text() == '{"another": "run"}' and json.loads(beside.read_text())["metrics"]["t2v/R@1"] == 100.0
    assert f"results written to {beside}" in captured.out and "written by another evaluation" in captured.err


def test_embed_refuses_an_existing_out_unless_overwrite(data, tmp_path, capsys):
    out = tmp_path / "g.safetensors"
    assert main(["embed", *data["common"], "--out", str(out)]) == 0
    before = _snapshot(tmp_path)
    capsys.readouterr()
    assert main(["embed", *data["common"], "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and _snapshot(tmp_path) == before
    assert main(["embed", *data["common"], "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.json", "g.safetensors"]


# --- modes ------------------------------------------------------------------------------------------------------
@pytest.fixture
def umask_027() -> Any:
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def test_written_files_get_the_mode_open_would_give(data, tmp_path, umask_027):
    """0666 & ~umask for a new file (safetensors alone gives 0600), the existing file's mode for a replaced one."""
    out = tmp_path / "emb" / "g.safetensors"
    assert main(["embed", *data["common"], "--out", str(out)]) == 0
    res = tmp_path / "r.json"
    assert main(["eval", *data["common"], "--out", str(res)]) == 0
    manifest = write_manifest(tmp_path / "m.jsonl", read_manifest(data["root"] / "synth" / "test.jsonl"))
    for p in (out, out.with_suffix(".json"), res, manifest):
        assert oct(p.stat().st_mode & 0o777) == oct(umask_027), p
    manifest.chmod(0o604)
    write_manifest(manifest, read_manifest(manifest))
    assert oct(manifest.stat().st_mode & 0o777) == oct(0o604)
