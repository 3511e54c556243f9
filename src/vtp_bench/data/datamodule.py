"""VideoTextDataModule: training pairs from the configured datasets, one video loader per eval split.

The eval loaders yield videos only; their texts (``val_set`` / ``test_set``) are encoded by VTPModule at
the end of the epoch, so each video is decoded and encoded exactly once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from vtp_bench.data.catalog import DatasetSource, locate
from vtp_bench.data.dataset import EvalVideoDataset, RetrievalSet, VideoTextDataset, collate
from vtp_bench.data.transforms import VideoTransform


class VideoTextDataModule(L.LightningDataModule):
    def __init__(self, cfg: DictConfig, eval_dataset: str | None = None, eval_split: str | None = None,
                 allow_missing: bool = False, video_root: Path | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.data
        self.eval_dataset = eval_dataset or d.eval[0]
        self.eval_split = eval_split or cfg.eval.split
        self.allow_missing = allow_missing or cfg.eval.allow_missing
        self.video_root = video_root
        self.train_set: VideoTextDataset | None = None
        self.val_set: RetrievalSet | None = None
        self.test_set: RetrievalSet | None = None
        self.train_transform = VideoTransform(d.img_size, train=True, crop_scale=tuple(d.crop_scale), hflip=d.hflip)
        self.eval_transform = VideoTransform(d.img_size, train=False)

    def _source(self, name: str, split: str) -> DatasetSource:
        return locate(name, self.cfg.data.root, split)

    def setup(self, stage: str | None = None) -> None:
        d = self.cfg.data
        if stage in (None, "fit"):
            if len(d.train) != 1:
                raise ValueError(
                    f"data.train lists {list(d.train)}: training on a mixture of datasets (alternating per "
                    "step) is not available yet; list one dataset"
                )
            src = self._source(d.train[0], "train")
            self.train_set = VideoTextDataset(
                src.manifest, d.num_frames, self.train_transform, d.train_sampling,
                video_root=self.video_root or src.video_root, seed=self.cfg.seed,
            )
        if stage in (None, "fit", "validate"):
            src = self._source(self.eval_dataset, d.val_split)
            self.val_set = RetrievalSet.from_manifest(
                src.manifest, self.video_root or src.video_root, self.allow_missing, d.max_val_videos
            )
        if stage in (None, "test"):
            src = self._source(self.eval_dataset, self.eval_split)
            self.test_set = RetrievalSet.from_manifest(src.manifest, self.video_root or src.video_root,
                                                       self.allow_missing)

    def _loader(self, ds: Any, batch_size: int, shuffle: bool, drop_last: bool) -> DataLoader:
        workers = self.cfg.data.num_workers
        return DataLoader(
            ds, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=workers,
            collate_fn=collate, pin_memory=False, persistent_workers=False,
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        if self.trainer is not None:
            self.train_set.set_epoch(self.trainer.current_epoch)
        # drop_last: every rank must hold the same batch size for the cross-rank gather
        return self._loader(self.train_set, self.cfg.data.batch_size, shuffle=True, drop_last=True)

    def eval_loader(self, rset: RetrievalSet) -> DataLoader:
        d = self.cfg.data
        ds = EvalVideoDataset(rset, d.num_frames, self.eval_transform, d.eval_sampling)
        return self._loader(ds, d.eval_batch_size, shuffle=False, drop_last=False)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None
        return self.eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        assert self.test_set is not None
        return self.eval_loader(self.test_set)
