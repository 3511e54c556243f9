"""Mixed pre-training: one dataset per batch, the same dataset on every rank at every step, resumable;
and a 2-process DDP run on synthetic videos + CC3M-style images (1-frame videos)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lightning.fabric.utilities.data import _set_sampler_epoch
from torch.utils.data import DataLoader

from helpers.runs import TRAIN_TINY, VTP, run_clean
from vtp_bench.data.samplers import MixedBatchSampler, ResumableSampler


@pytest.mark.parametrize("world,rank", [(1, 0), (2, 0), (2, 1), (3, 2)])
def test_one_dataset_gives_the_resumable_sampler_batches(world, rank):
    ref = list(ResumableSampler(53, 4, rank, world, seed=3))
    ref_batches = [ref[i : i + 4] for i in range(0, len(ref) - len(ref) % 4, 4)]
    for mode in ("round_robin", "proportional"):
        s = MixedBatchSampler([53], 4, rank, world, seed=3, mode=mode)
        assert list(s) == ref_batches and len(s) == len(ref_batches)


@pytest.mark.parametrize("mode", ["round_robin", "proportional"])
def test_every_rank_reads_the_same_dataset_at_every_step(mode):
    lengths, bs, world = [37, 90, 41], 4, 2
    offsets = [0, 37, 127, 168]
    ranks = [MixedBatchSampler(lengths, bs, r, world, seed=11, mode=mode) for r in range(world)]
    for epoch in (0, 1):
        for s in ranks:
            s.set_epoch(epoch)
        runs = [list(s) for s in ranks]
        which = [[next(d for d in range(3) if offsets[d] <= b[0] < offsets[d + 1]) for b in run] for run in runs]
        assert which[0] == which[1] == ranks[0].schedule()  # same dataset per step on both ranks
        for run, ds in zip(runs, which):
            for b, d in zip(run, ds):
                assert len(b) == bs and all(offsets[d] <= i < offsets[d + 1] for i in b)  # one dataset per batch
        seen = [set(i for b in run for i in b) for run in runs]
        assert not seen[0] & seen[1]  # ranks read disjoint items
        per = [(n // world) // bs for n in lengths]  # 4, 11, 5 batches per rank
        if mode == "round_robin":  # Frozen's zip(*loaders): alternate, stop with the shortest
            assert which[0] == [0, 1, 2] * 4
        else:  # every batch once, order shuffled per epoch
            assert [which[0].count(d) for d in range(3)] == per
    assert MixedBatchSampler(lengths, bs, 0, world, 11, "proportional").schedule() != ranks[0].schedule()


def test_resume_skips_batches_and_lightning_sets_the_epoch():
    s = MixedBatchSampler([40, 24], 4, seed=2, mode="proportional")
    full = list(s)
    s.set_epoch(0, skip_batches=5)
    assert list(s) == full[5:] and len(s) == len(full)
    loader = DataLoader(range(64), batch_sampler=s)
    _set_sampler_epoch(loader, 3)  # what Lightning calls at each epoch start
    assert s.epoch == 3 and s.skip_batches == 0


def test_too_small_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="no full batch"):
        MixedBatchSampler([100, 5], 4, 0, 2)


@pytest.fixture(scope="module")
def mixed_root(tmp_path_factory) -> Path:
    """Synthetic videos + a CC3M-style image set converted from its official tsv layout."""
    import numpy as np
    from PIL import Image

    from vtp_bench.cli import main
    from vtp_bench.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("mixed")
    generate_synthetic(root / "synth", num_videos=40, seed=3, grounding_videos=0, progress=False)
    images = root / "cc3m_raw" / "training"
    images.mkdir(parents=True)
    lines = ["caption\tfilename"]
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(images / f"{i:07d}_{i}.jpg")
        lines.append(f"a picture of thing number {i}\t{i:07d}_{i}.jpg")
    tsv = root / "cc3m_training_success_full.tsv"
    tsv.write_text("\n".join(lines) + "\n")
    assert main(["data", "convert", "cc3m", str(tsv), "--out", str(root / "cc3m" / "train.jsonl"),
                 "--video-root", str(root / "cc3m_raw")]) == 0
    return root


def test_ddp_mixed_videos_and_images(mixed_root, tmp_path):
    runs = tmp_path / "runs"
    args = [a for a in TRAIN_TINY if not a.startswith("trainer.max_steps")]
    r = run_clean([VTP, "train", "frozen_synth", *args, f"data.root={mixed_root}", f"run.dir={runs}",
                   "run.version=mixed", "data.train=[synth,cc3m]", "data.mix=proportional", "trainer.devices=2",
                   "trainer.strategy=ddp", "trainer.max_steps=-1"], tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((runs / "frozen_synth" / "mixed" / "summary.json").read_text())
    # per rank and epoch: synth 32 train clips -> 16 per rank -> 4 batches; cc3m 24 -> 12 -> 3 batches
    assert summary["steps_per_dataset"] == {"synth": 4, "cc3m": 3} and summary["global_step"] == 7
    assert summary["skipped_videos"] == 0
