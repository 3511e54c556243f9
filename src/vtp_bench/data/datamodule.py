"""VideoTextDataModule: training pairs from the configured datasets, one clip loader per evaluation split.

Evaluation sets come from an evaluation task (``tasks/``): validation is ``eval.val_task`` (retrieval by default)
on ``data.eval[0]``; ``test`` is the task ``evaluate`` asks for. The loaders yield the set's clips only; the task's
queries (captions, class prompts, timed sentences) are encoded by VTPModule at the end of the epoch, so each clip
is decoded and encoded exactly once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from vtp_bench.data.catalog import DatasetSource, is_path, locate
from vtp_bench.data.dataset import DecodeOptions, EvalClipDataset, MixedDataset, VideoTextDataset, collate
from vtp_bench.data.evalset import EvalSet, EvalSetSource
from vtp_bench.data.inputs import ItemInputs
from vtp_bench.data.manifest import ManifestError
from vtp_bench.data.samplers import MixedBatchSampler, ShardSampler
from vtp_bench.data.transforms import VideoTransform
from vtp_bench.distributed import rank_world
from vtp_bench.registry import TASKS


class VideoTextDataModule(L.LightningDataModule):
    def __init__(self, cfg: DictConfig, eval_dataset: str | None = None, eval_split: str | None = None,
                 allow_missing: bool = False, video_root: Path | None = None, task: str = "retrieval",
                 eval_name: str | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.data
        self.eval_dataset = eval_dataset or d.eval[0]
        self.test_task: EvalSetSource = TASKS.get(task)()
        self.val_task: EvalSetSource = TASKS.get(cfg.eval.val_task)()
        self.split_given = eval_split is not None  # asked for: a manifest file of another split is refused
        self.eval_split = eval_split or self.test_task.default_split(self.eval_dataset)
        self.allow_missing = allow_missing or cfg.eval.allow_missing
        self.video_root = video_root
        self.eval_name = eval_name  # the name of an evaluation set given as a path (default: its stem)
        self.test_source: DatasetSource | None = None
        self.train_set: MixedDataset | None = None
        self.val_set: EvalSet | None = None
        self.test_set: EvalSet | None = None
        self.train_transform = VideoTransform(d.img_size, train=True, crop_scale=tuple(d.crop_scale), hflip=d.hflip)
        self.eval_transform = VideoTransform(d.img_size, train=False)
        self.decode = DecodeOptions(d.decode_size, d.decode_threads)
        # what the method reads besides (or instead of) the clip: Method.data_inputs (data/inputs.py)
        label = self._source(self.eval_dataset, self.eval_split, eval_name).name if is_path(self.eval_dataset) else None
        self.eval_inputs = ItemInputs.for_dataset(cfg, self.eval_dataset, label)

    def _source(self, name: str, split: str, label: str | None = None, split_given: bool = False) -> DatasetSource:
        return locate(name, self.cfg.data.root, split, label, split_given)

    def setup(self, stage: str | None = None) -> None:
        d = self.cfg.data
        if stage in (None, "fit") and d.format == "webdataset":
            from vtp_bench.data.shards import shard_train_set  # needs only torch; the writer needs webdataset

            self.train_set = shard_train_set(self.cfg, self.train_transform, self.decode)
        elif stage in (None, "fit"):
            parts = []
            for i, name in enumerate(d.train):
                src = self._source(name, "train")
                parts.append(VideoTextDataset(
                    src.manifest, d.num_frames, self.train_transform, d.train_sampling,
                    video_root=self.video_root or src.video_root, seed=self.cfg.seed + 7919 * i,
                    decode=self.decode, name=src.name, inputs=ItemInputs.for_dataset(self.cfg, name),
                ))
            self.train_set = MixedDataset(parts)
        if stage in (None, "fit", "validate"):
            src = self._source(self.eval_dataset, d.val_split)
            self.val_set = self.val_task.load(src.manifest, self.video_root or src.video_root, self.allow_missing,
                                              self.cfg, d.max_val_videos, check_videos=self.eval_inputs.video)
        if stage in (None, "test"):
            src = self.test_source = self._source(self.eval_dataset, self.eval_split, self.eval_name, self.split_given)
            self.test_set = self.test_task.load(src.manifest, self.video_root or src.video_root, self.allow_missing,
                                                self.cfg, check_videos=self.eval_inputs.video)

    def _loader(self, ds: Any, **batching: Any) -> DataLoader:
        # its own generator: creating an iterator must not draw from the global RNG (that would shift
        # dropout masks after a resume); items draw from their own (seed, epoch, index) RNG anyway
        return DataLoader(
            ds, num_workers=self.cfg.data.num_workers, collate_fn=collate, pin_memory=torch.cuda.is_available(),
            persistent_workers=False, generator=torch.Generator().manual_seed(self.cfg.seed), **batching,
        )

    def train_dataloader(self) -> DataLoader:
        """The order depends on (seed, epoch) only, every rank takes the same number of full batches and
        the same dataset at each step, so cross-rank gathers match and a resumed run sees the same batches."""
        assert self.train_set is not None
        rank, world = rank_world()
        if self.cfg.data.format == "webdataset":
            return self._shard_loader(rank, world)
        batch = self.cfg.data.batch_size
        for part in self.train_set.parts:  # name the manifest that cannot fill one batch (an empty one, say)
            if len(part) // world < batch:
                raise ManifestError(f"{part.manifest}: {len(part)} training items hold no full batch of {batch} per "
                                    f"rank on {world} rank(s)" + (" (the manifest is empty)" if not len(part) else "")
                                    + "; give it more rows or lower data.batch_size")
        self.train_sampler = MixedBatchSampler([len(p) for p in self.train_set.parts], batch,
                                               rank, world, seed=self.cfg.seed, mode=self.cfg.data.mix)
        module = self.trainer.lightning_module if self.trainer is not None else None
        position = getattr(module, "resume_position", None)
        if position:  # resuming: continue the epoch with the first batch the checkpoint had not trained on
            per_epoch = len(self.train_sampler)
            epoch, skip = position["epoch"], position["batches"]
            if skip >= per_epoch:
                epoch, skip = epoch + 1, 0
            self.train_sampler.set_epoch(epoch, skip_batches=skip)
            self.train_set.set_epoch(epoch)
            module.resume_position = None
        return self._loader(self.train_set, batch_sampler=self.train_sampler)

    def _resume_position(self, per_epoch: int) -> tuple[int, int] | None:
        """(epoch, batches to skip) when resuming mid-epoch (consumed: read once), else None."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        position = getattr(module, "resume_position", None)
        if not position:
            return None
        module.resume_position = None
        epoch, skip = position["epoch"], position["batches"]
        return (epoch + 1, 0) if skip >= per_epoch else (epoch, skip)

    def _shard_loader(self, rank: int, world: int) -> DataLoader:
        """data.format=webdataset: each worker yields whole batches of its lane (data/shards.py)."""
        from vtp_bench.data.shards import ShardLoader

        ds = self.train_set.configure(rank, world, self.cfg.data.num_workers)
        position = self._resume_position(len(ds))
        if position:
            ds.set_epoch(position[0], skip_batches=position[1])
        return ShardLoader(ds, self.cfg.data.num_workers, pin_memory=torch.cuda.is_available())

    def eval_loader(self, eset: EvalSet) -> DataLoader:
        """Each rank encodes a contiguous shard of the clips, without padding; VTPModule gathers and trims."""
        d = self.cfg.data
        frames = d.eval_num_frames or d.num_frames
        ds = EvalClipDataset(eset, frames, self.eval_transform, d.eval_sampling, self.decode, self.eval_inputs)
        rank, world = rank_world()
        return self._loader(ds, batch_size=d.eval_batch_size, sampler=ShardSampler(len(ds), rank, world))

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None
        return self.eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        assert self.test_set is not None
        return self.eval_loader(self.test_set)
