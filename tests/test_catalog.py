"""Benchmark datasets in the registry: where their manifests live, and errors that print the command."""

from __future__ import annotations

import pytest

from vtp_bench.config import load_config
from vtp_bench.data.catalog import BENCHMARKS, DataNotFoundError, locate
from vtp_bench.data.convert.base import CONVERTERS
from vtp_bench.data.manifest import ManifestRow, write_manifest
from vtp_bench.registry import DATASETS


def test_every_benchmark_is_registered_with_a_valid_convert_command():
    names = {b.name for b in BENCHMARKS}
    assert names == {"webvid", "cc3m", "msrvtt_1ka", "msrvtt_full", "msvd", "lsmdc", "didemo", "didemo_grounding",
                     "charades_sta", "activitynet", "activitynet_grounding", "hmdb51", "ucf101"}
    assert names <= set(DATASETS.names())
    for b in BENCHMARKS:
        for split, command in b.splits.items():
            fmt, *inputs = command.split()
            conv = CONVERTERS.get(fmt)  # the printed command names a real format ...
            assert len(conv.inputs) - conv.optional_inputs <= len(inputs) <= len(conv.inputs), (b.name, split)


def test_missing_manifest_names_file_and_command(tmp_path):
    with pytest.raises(DataNotFoundError) as e:
        locate("msvd", tmp_path, "test")
    msg = str(e.value)
    assert str(tmp_path / "msvd" / "test.jsonl") in msg
    assert "vtp-bench data convert msvd captions_msvd.json test_list.txt" in msg
    with pytest.raises(DataNotFoundError, match="has no split 'dev'"):
        locate("didemo", tmp_path, "dev")


def test_val_reads_test_where_the_protocol_has_no_val(tmp_path):
    row = ManifestRow("video1", "videos/video1.mp4", "a", "video1_0", "test")
    write_manifest(tmp_path / "msrvtt_1ka" / "test.jsonl", [row])
    (tmp_path / "msrvtt_1ka" / "videos").mkdir()
    src = locate("msrvtt_1ka", tmp_path, "val")
    assert src.manifest == tmp_path / "msrvtt_1ka" / "test.jsonl" and src.split == "val"
    with pytest.raises(DataNotFoundError, match="msvd/val.jsonl"):
        locate("msvd", tmp_path, "val")


def test_missing_video_folder_is_named(tmp_path):
    row = ManifestRow("v", "videos/sub/v.mp4", "a", "v_0", "test")
    write_manifest(tmp_path / "lsmdc" / "test.jsonl", [row])
    with pytest.raises(DataNotFoundError) as e:
        locate("lsmdc", tmp_path, "test")
    assert str(tmp_path / "lsmdc" / "videos" / "sub") in str(e.value) and "--video-root" in str(e.value)


def test_data_root_from_env_and_training_error(tmp_path, monkeypatch, capsys):
    from vtp_bench.cli import main

    monkeypatch.setenv("VTP_DATA_ROOT", str(tmp_path))
    cfg = load_config("frozen_synth", ["data.train=[webvid,cc3m]"])
    assert cfg.data.root == str(tmp_path)
    assert main(["train", "frozen_synth", "data.train=[webvid,cc3m]", "trainer.accelerator=cpu"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}/webvid/train.jsonl" in err and "vtp-bench data convert webvid results_2M_train.csv" in err


def test_a_manifest_named_by_its_split_takes_its_folders_name(tmp_path):
    """``mydata/test.jsonl`` is the test split of mydata: its tables read ``mydata/test``, not ``test/test``."""
    data = tmp_path / "mydata"
    (data / "videos").mkdir(parents=True)
    for split in ("test", "val"):
        write_manifest(data / f"{split}.jsonl", [ManifestRow("v1", "videos/v1.mp4", "a cat", "v1_0", split)])
    src = locate(str(data / "test.jsonl"), tmp_path, "test")
    assert (src.name, src.split, src.from_path) == ("mydata", "test", True)
    assert locate(str(data / "val.jsonl"), tmp_path, "test").name == "mydata"  # whatever split is asked for
    assert locate(str(data), tmp_path, "test").name == "mydata"  # the folder of <split>.jsonl: the same name
    # a stem that is its rows' split, though not a usual split name; and a stem of its own keeps its name
    write_manifest(data / "test1.jsonl", [ManifestRow("v1", "videos/v1.mp4", "a cat", "v1_0", "test1")])
    assert locate(str(data / "test1.jsonl"), tmp_path, "test").name == "mydata"
    write_manifest(data / "gallery.jsonl", [ManifestRow("v1", "videos/v1.mp4", "a cat", "v1_0", "test")])
    assert locate(str(data / "gallery.jsonl"), tmp_path, "test").name == "gallery"
    assert locate(str(data / "test.jsonl"), tmp_path, "test", label="mine").name == "mine"
    # a benchmark's own folder never lends its name to a path (no table calls other data by a benchmark's name):
    # the file keeps its stem (as grounding_head_synth's ${data.root}/synth/grounding_train.jsonl); a stem that is
    # a benchmark's name needs --name
    bench = tmp_path / "msvd"
    (bench / "videos").mkdir(parents=True)
    write_manifest(bench / "test.jsonl", [ManifestRow("v1", "videos/v1.mp4", "a cat", "v1_0", "test")])
    assert locate(str(bench / "test.jsonl"), tmp_path, "test").name == "test"
    write_manifest(data / "msvd.jsonl", [ManifestRow("v1", "videos/v1.mp4", "a cat", "v1_0", "test")])
    with pytest.raises(DataNotFoundError, match="its name would be 'msvd'"):
        locate(str(data / "msvd.jsonl"), tmp_path, "test")


def test_a_manifest_file_is_one_split_used_whole(tmp_path, capsys):
    """``eval --dataset file.jsonl --split train`` scored the whole file and called it test; a file mixing train
    and val rows was scored (or trained on) whole. Both are refused with the fix."""
    (tmp_path / "videos").mkdir()
    mixed = tmp_path / "mixed.jsonl"
    write_manifest(mixed, [ManifestRow(f"v{i}", f"videos/v{i}.mp4", f"caption {i}", f"t{i}", s)
                           for i, s in enumerate(["train", "train", "val"])])
    for split in ("val", "test"):
        with pytest.raises(DataNotFoundError, match="splits train, val.*one file per split"):
            locate(str(mixed), tmp_path, split)
    one = tmp_path / "mine.jsonl"
    write_manifest(one, [ManifestRow(f"v{i}", f"videos/v{i}.mp4", f"caption {i}", f"t{i}", "test") for i in range(2)])
    assert locate(str(one), tmp_path, "test", split_given=True).manifest == one
    assert locate(str(one), tmp_path, "val").manifest == one  # a default split: the file is its own split
    with pytest.raises(DataNotFoundError, match="--split train was asked for, but its rows are split 'test'"):
        locate(str(one), tmp_path, "train", split_given=True)
