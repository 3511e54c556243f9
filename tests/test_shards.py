"""Sharded training data (data.format=webdataset): the writer's layout, clips equal to the files' clips, how an
epoch is cut across ranks and workers, resume accounting, unreadable samples, mixed image+video, and a 2-process
DDP run through the CLI with equal step counts."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.types import _Stateful

from helpers.runs import RESUME_ARGS, TRAIN_TINY, VTP, assert_same_run, run_clean
from vtp_bench.data.dataset import VideoTextDataset
from vtp_bench.data.inputs import ItemInputs
from vtp_bench.data.manifest import ManifestRow, read_manifest, write_manifest
from vtp_bench.data.samplers import MixedBatchSampler
from vtp_bench.data.shard_write import write_shards
from vtp_bench.data.shards import (
    ShardLoader,
    ShardPart,
    ShardTrainSet,
    ShardVideos,
    load_shard_set,
    read_range,
    video_members,
)
from vtp_bench.data.transforms import VideoTransform

pytest.importorskip("webdataset")


@pytest.fixture(scope="module")
def shard_root(tmp_path_factory) -> Path:
    """30 synthetic videos (24 train rows, one corrupt file; the val split sharded once per video) and 22 CC3M-style
    images, each sharded."""
    from PIL import Image

    from vtp_bench.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("shards")
    generate_synthetic(root / "synth", num_videos=30, seed=4, grounding_videos=0, progress=False)
    bad = read_manifest(root / "synth" / "train.jsonl")[5]
    (root / "synth" / bad.path).write_bytes(b"not an mp4")
    write_shards(root / "synth" / "train.jsonl", shard_size=5)
    write_shards(root / "synth" / "val.jsonl", shard_size=2, once_per_video=True)  # validation reads them
    rng = np.random.default_rng(0)
    (root / "cc3m" / "images").mkdir(parents=True)
    rows = []
    for i in range(22):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(root / "cc3m" / "images" / f"{i}.jpg")
        rows.append(ManifestRow(f"img{i}", f"images/{i}.jpg", f"a picture of thing {i}", f"t{i}", "train"))
    write_manifest(root / "cc3m" / "train.jsonl", rows)
    write_shards(root / "cc3m" / "train.jsonl", shard_size=4)
    return root


def _part(root: Path, name: str, seed: int = 0) -> ShardPart:
    return ShardPart(load_shard_set(name, root / name / "shards" / "train"), 3, VideoTransform(32, train=True),
                     "rand", seed, None, ItemInputs())


def test_writer_layout_is_webdatasets_and_the_index_counts(shard_root):
    import webdataset as wds

    rows = read_manifest(shard_root / "synth" / "train.jsonl")
    folder = shard_root / "synth" / "shards" / "train"
    index = json.loads((folder / "index.json").read_text())
    assert index["samples"] == len(rows) == 24 and [s["samples"] for s in index["shards"]] == [5, 5, 5, 5, 4]
    names = tarfile.open(folder / "shard-000000.tar").getnames()
    assert sorted(names[:3]) == ["000000000.json", "000000000.mp4", "000000000.txt"]  # video2dataset's members
    samples = list(wds.WebDataset(sorted(str(p) for p in folder.glob("*.tar")), shardshuffle=False))  # its reader
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(24)]
    for s, row in zip(samples, rows):
        assert s["txt"].decode() == row.text and json.loads(s["json"]) == row.to_dict()
        assert s["mp4"] == (shard_root / "synth" / row.path).read_bytes()


def test_clip_from_a_shard_equals_the_clip_from_the_file(shard_root):
    part = _part(shard_root, "synth", seed=3)
    files = VideoTextDataset(shard_root / "synth" / "train.jsonl", 3, VideoTransform(32, train=True), "rand", seed=3)
    files.set_epoch(2)
    raws = list(read_range(part.shards, list(range(5)), 0, 24))
    for i in (0, 7, 23):
        a, b = part.item(raws[i], epoch=2), files[i]
        assert a["video_id"] == b["video_id"] and a["text"] == b["text"] and a["index"] == b["index"] == i
        assert torch.equal(a["video"], b["video"]) and torch.equal(a["video_mask"], b["video_mask"])
    assert part.item(raws[5], 2)["skipped"] == "000000005"  # the corrupt file: a skip marker, as with files


def _positions(ds: ShardTrainSet, lane: int) -> list[list[int]]:
    return [[r.position for r in raws] for _, _, raws in ds.lane_batches(lane)]


@pytest.mark.parametrize("world,lanes", [(1, 1), (2, 1), (2, 2), (3, 2)])
def test_an_epoch_reads_each_sample_once_with_equal_steps_per_rank(shard_root, world, lanes):
    part = _part(shard_root, "synth")
    steps, seen = [], []
    for rank in range(world):
        ds = ShardTrainSet([part], batch_size=2, seed=1, shuffle_buffer=4).configure(rank, world, lanes)
        ds.set_epoch(1)
        batches = [b for lane in range(lanes) for b in _positions(ds, lane)]
        steps.append(len(batches))
        assert len(ds) == len(batches) and all(len(b) == 2 for b in batches)
        seen += [p for b in batches for p in b]
    assert steps == [24 // (world * 2)] * world  # floor(N / (world * batch)) steps on every rank
    assert len(seen) == len(set(seen)) == world * steps[0] * 2  # no sample twice in the epoch


def _keys(loader) -> list[list[int]]:
    """Each batch's sample positions (a skip marker's key is its position: `data shard` keys are row numbers)."""
    return [sorted((b["index"].tolist() if b["size"] else []) + [int(k) for k in b["skipped"]]) for b in loader]


def test_workers_and_resume_mid_epoch(shard_root):
    """The DataLoader with 2 workers hands out the steps in order; a resume with the same workers continues with
    exactly the batches not yet seen; with other workers, at most skip * batch samples differ (the doc's bound)."""
    ds = ShardTrainSet([_part(shard_root, "synth")], batch_size=3, seed=2, shuffle_buffer=4).configure(0, 1, 2)
    full = _keys(ShardLoader(ds, num_workers=2))
    ref = [sorted(b) for lane in (0, 1) for b in _positions(ds, lane)]
    order = [k for lane in (0, 1) for k in range(lane, 8, 2)]
    assert [full[k] for k in order] == ref and len(full) == 8
    loader = ShardLoader(ds, num_workers=2)
    assert isinstance(loader, _Stateful)  # what Lightning asks of a loader to resume mid-epoch without a warning
    loader.load_state_dict({"epoch": 0, "batches": 3})  # as Lightning restores it: 3 steps of epoch 0 were done
    assert ds.skip_batches == 3 and _keys(loader) == full[3:]
    assert len(ds) == 8
    ds.set_epoch(1)  # Lightning's next epoch: the skip is over
    assert ds.skip_batches == 0
    other = ShardTrainSet([_part(shard_root, "synth")], batch_size=3, seed=2, shuffle_buffer=4).configure(0, 1, 1)
    other.set_epoch(0, skip_batches=3)
    rest = [k for b in _keys(ShardLoader(other, num_workers=0)) for k in b]
    done = [k for b in full[:3] for k in b]
    everything = {k for b in full for k in b}
    assert len(rest) == 15 and len(everything - set(done) - set(rest)) <= 3 * 3


def test_unreadable_samples_and_a_truncated_shard_are_skipped_and_counted(shard_root, tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    src = shard_root / "synth" / "shards" / "train"
    for f in src.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    data = (folder / "shard-000002.tar").read_bytes()
    (folder / "shard-000002.tar").write_bytes(data[: len(data) // 2])  # cut inside sample 2 of 5
    part = ShardPart(load_shard_set("synth", folder), 3, VideoTransform(32, train=True), "rand", 0, None,
                     ItemInputs())
    ds = ShardTrainSet([part], batch_size=4, seed=0).configure(0, 1, 0)
    batches = list(ShardLoader(ds, num_workers=0))
    assert len(batches) == 6  # the step count is kept: the lost samples are skip markers
    skipped = [k for b in batches for k in b["skipped"]]
    good = sum(b["size"] for b in batches)
    assert good + len(skipped) == 24 and "000000005" in skipped
    assert 1 <= len(skipped) - 1 <= 5  # the samples of the cut shard from the damaged one on
    assert any("shard-000002.tar" in e for b in batches for e in b["skipped_errors"])


@pytest.mark.parametrize("mode", ["round_robin", "proportional"])
def test_mixed_images_and_videos_one_dataset_per_step_on_every_rank(shard_root, mode):
    parts = [_part(shard_root, "synth"), _part(shard_root, "cc3m", seed=7919)]
    runs = []
    for rank in range(2):
        ds = ShardTrainSet(parts, batch_size=2, seed=5, mode=mode, shuffle_buffer=3).configure(rank, 2, 0)
        runs.append([(b["dataset"][0] if b["size"] else "", b) for b in ShardLoader(ds, num_workers=0)])
    ref = MixedBatchSampler([24, 22], 2, 0, 2, seed=5, mode=mode).schedule()
    names = ["synth", "cc3m"]
    for run in runs:  # a batch of two holds at most one corrupt video, so every batch names its dataset
        assert [d for d, _ in run] == [names[i] for i in ref]
        for d, b in run:
            assert b["dataset"] == [d] * b["size"]  # one dataset per batch
            if d == "cc3m":
                assert b["video_mask"][:, 0].all() and not b["video_mask"][:, 1:].any()  # an image: one frame


def test_evaluation_reads_each_video_from_its_shard_by_offset(shard_root):
    """The tar headers give each video's member (its first sample); its bytes, read by offset, are the file's."""
    rows = read_manifest(shard_root / "synth" / "val.jsonl")
    index = json.loads((shard_root / "synth" / "shards" / "val" / "index.json").read_text())
    assert index["once_per_video"] and index["samples"] == len({r.video_id for r in rows})
    for split in ("val", "train"):  # train: one sample per row
        members = video_members(load_shard_set("synth", shard_root / "synth" / "shards" / split))
        first = {}
        for r in read_manifest(shard_root / "synth" / f"{split}.jsonl"):
            first.setdefault(r.video_id, r)
        assert sorted(members) == sorted(first)
        videos = ShardVideos(members)
        for vid, row in first.items():
            assert videos(vid, Path(row.path)).data == (shard_root / "synth" / row.path).read_bytes()


def test_ddp_train_from_shards_through_the_cli(shard_root, tmp_path, capsys):
    """Acceptance 2: `data shard`, then `train frozen_synth data.format=webdataset` under 2-process CPU DDP (validating
    on the val split's shards: data.eval_format=webdataset); then `eval` of its checkpoint from the shards scores
    what it scores from the files, and the results name the format."""
    root = tmp_path / "data"
    (root / "synth").mkdir(parents=True)
    for f in (shard_root / "synth").iterdir():  # the manifests and videos, without the earlier shards
        if f.name != "shards":
            (root / "synth" / f.name).symlink_to(f)
    from vtp_bench.cli import main

    assert main(["data", "shard", str(root / "synth" / "train.jsonl"), "--shard-size", "3"]) == 0  # in-process
    assert (root / "synth" / "shards" / "train" / "index.json").is_file()
    assert main(["data", "shard", str(root / "synth" / "val.jsonl"), "--once-per-video"]) == 0
    runs = tmp_path / "runs"
    args = [a for a in TRAIN_TINY if not a.startswith("trainer.max_steps")]
    r = run_clean([VTP, "train", "frozen_synth", *args, f"data.root={root}", f"run.dir={runs}", "run.version=wds",
                   "data.format=webdataset", "data.eval_format=webdataset", "data.batch_size=3", "trainer.devices=2",
                   "trainer.strategy=ddp",
                   "trainer.max_steps=-1"], tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((runs / "frozen_synth" / "wds" / "summary.json").read_text())
    assert summary["steps_per_rank"] == [4, 4] and summary["global_step"] == 4  # floor(24 / (2 * 3))
    assert summary["skipped_videos"] == 1  # the corrupt video, skipped on one rank and gathered
    metrics = (runs / "frozen_synth" / "wds" / "metrics.csv").read_text().splitlines()[0]
    assert "train/data_time" in metrics and "train/data_share" in metrics
    ckpt = str(runs / "frozen_synth" / "wds" / "checkpoints" / "last.ckpt")
    results = {}
    videos = root / "synth" / "videos"
    videos.rename(root / "synth" / "videos_away")  # from shards, the video files are not read: they may be gone
    for fmt in ("webdataset", "files"):  # the run's own format, and the files
        if fmt == "files":
            (root / "synth" / "videos_away").rename(videos)
        out = tmp_path / f"{fmt}.json"
        assert main(["eval", "--ckpt", ckpt, "--dataset", "synth", "--split", "val", "--data-root", str(root),
                     "--out", str(out), f"data.eval_format={fmt}"]) == 0
        results[fmt] = json.loads(out.read_text())
        assert (results[fmt]["data_format"], results[fmt]["decoder"]) == (fmt, "pyav")
    assert results["webdataset"]["metrics"] == results["files"]["metrics"]
    assert results["webdataset"]["num_videos"] == 3
    capsys.readouterr()
    assert main(["eval", "--ckpt", ckpt, "--dataset", "synth", "--split", "test", "--data-root", str(root)]) == 2
    assert "vtp-bench data shard" in capsys.readouterr().err  # no test shards: how to write them
    assert main(["eval", "--ckpt", ckpt, "--dataset", "synth", "--split", "test", "--data-root", str(root),
                 "data.eval_format=files"]) == 0  # the run's config evaluates from shards; the files on request


@pytest.mark.slow
def test_resume_mid_epoch_from_shards_matches_uninterrupted(shard_root, tmp_path):
    """Through the CLI with 2 workers: a run resumed from a mid-epoch checkpoint ends with the uninterrupted
    run's weights (same world size and workers: the exact case of docs/data_shards.md)."""
    runs = tmp_path / "runs"
    base = [VTP, "train", "frozen_synth", *RESUME_ARGS, f"data.root={shard_root}", f"run.dir={runs}",
            "data.format=webdataset", "data.num_workers=2", "data.shuffle_buffer=5"]
    r = run_clean(base + ["run.version=full"], tmp_path)  # 24 samples / batch 4 = 6 steps per epoch, 2 epochs
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    full = runs / "frozen_synth" / "full"
    r = run_clean(base + ["run.version=resumed", "--resume", str(full / "checkpoints" / "epoch1-step9.ckpt")],
                  tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "not resumable" not in r.stderr  # the shard loader is resumable in Lightning's sense
    assert_same_run(full, runs / "frozen_synth" / "resumed", 12)


def test_missing_webdataset_names_the_extra(monkeypatch, tmp_path):
    import sys

    from vtp_bench.data.shard_write import require_webdataset

    monkeypatch.setitem(sys.modules, "webdataset", None)
    with pytest.raises(ImportError, match=r"vtp_bench\[shards\]"):
        require_webdataset()


def test_locating_shards_and_clear_errors(shard_root, tmp_path):
    from vtp_bench.data.catalog import DataNotFoundError
    from vtp_bench.data.shards import locate_shards

    assert locate_shards("synth", shard_root, "train") == ("synth", shard_root / "synth" / "shards" / "train")
    folder = shard_root / "cc3m" / "shards" / "train"
    assert locate_shards(str(folder), "unused", "train") == ("train", folder)
    assert locate_shards(str(shard_root / "cc3m" / "train.jsonl"), "x", "train")[1] == folder
    with pytest.raises(DataNotFoundError, match="vtp-bench data shard"):
        load_shard_set("webvid", tmp_path)
