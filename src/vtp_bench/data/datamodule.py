"""VideoTextDataModule: training pairs from the configured datasets, one clip loader per evaluation split.

Evaluation sets come from an evaluation task (``tasks/``): validation is ``eval.val_task`` (retrieval by default)
on ``data.eval[0]``; ``test`` is the task ``evaluate`` asks for. The loaders yield the set's clips only; the task's
queries (captions, class prompts, timed sentences) are encoded by VTPModule at the end of the epoch, so each clip
is decoded and encoded exactly once.

How clips are stored and read (video files, tar shards) is a data format (``data/formats/``): ``data.format`` gives
the training set and its loader, ``data.eval_format`` each evaluation clip's video.

Resuming: where the training data stands is this DataModule's state (``state_dict``: the epoch and the batches of it
done), which Lightning saves in every checkpoint under the class's name and hands back to ``load_state_dict``
before the training loader is made; ``train_dataloader`` then starts the loader there. The loader is resumable in
Lightning's sense too (``formats.base.ResumableLoader``: same state, same effect).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import lightning as L
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from vtp_bench.data.catalog import DatasetSource, is_path, locate
from vtp_bench.data.dataset import DecodeOptions, EvalClipDataset
from vtp_bench.data.evalset import EvalSet, EvalSetSource, SharedClips
from vtp_bench.data.formats.base import ClipMedia, DataFormat, ResumableLoader, loader_args
from vtp_bench.data.inputs import ItemInputs
from vtp_bench.data.samplers import ShardSampler
from vtp_bench.data.transforms import VideoTransform
from vtp_bench.distributed import rank_world
from vtp_bench.registry import DATA_FORMATS, TASKS


class VideoTextDataModule(L.LightningDataModule):
    def __init__(self, cfg: DictConfig, eval_dataset: str | None = None, eval_split: str | None = None,
                 allow_missing: bool = False, video_root: Path | None = None,
                 task: str | EvalSetSource | Sequence[str | EvalSetSource] = "retrieval",
                 eval_name: str | None = None) -> None:
        """``task``: the evaluation task(s) ``test`` scores (names or task objects); several tasks on one dataset
        share their clips: each clip is decoded and encoded once (``SharedClips``)."""
        super().__init__()
        self.cfg = cfg
        d = cfg.data
        self.eval_dataset = eval_dataset or d.eval[0]
        tasks = [task] if isinstance(task, str) or not isinstance(task, Sequence) else list(task)
        self.test_tasks: list[EvalSetSource] = [TASKS.get(t)() if isinstance(t, str) else t for t in tasks]
        self.val_task: EvalSetSource = TASKS.get(cfg.eval.val_task)()
        self.split_given = eval_split is not None  # asked for: a manifest file of another split is refused
        self.eval_splits = [eval_split or t.default_split(self.eval_dataset) for t in self.test_tasks]
        self.eval_split = self.eval_splits[0]
        self.allow_missing = allow_missing or cfg.eval.allow_missing
        self.video_root = video_root
        self.eval_name = eval_name  # the name of an evaluation set given as a path (default: its stem)
        self.test_sources: list[DatasetSource] = []
        self.format: DataFormat = DATA_FORMATS.get(d.format)(cfg)  # training
        self.eval_format: DataFormat = DATA_FORMATS.get(d.eval_format)(cfg)  # validation and test
        self.train_set: Any = None
        self.val_set: EvalSet | None = None
        self.test_sets: list[EvalSet] = []
        self.val_media: ClipMedia | None = None  # where an evaluation clip's video comes from (None: its file)
        self.test_clips: Any = None  # what the test loader encodes: the one set, or the sets' SharedClips
        self.test_media: ClipMedia | None = None
        self.resume_from: dict[str, int] | None = None  # load_state_dict's position, until a loader starts there
        self.train_transform = VideoTransform(d.img_size, train=True, crop_scale=tuple(d.crop_scale), hflip=d.hflip)
        self.eval_transform = VideoTransform(d.img_size, train=False)
        self.decode = DecodeOptions(d.decode_size, d.decode_threads)
        # what the method reads besides (or instead of) the clip: Method.data_inputs (data/inputs/)
        label = self._source(self.eval_dataset, self.eval_split, eval_name).name if is_path(self.eval_dataset) else None
        self.eval_inputs = ItemInputs.for_dataset(cfg, self.eval_dataset, label)

    def _source(self, name: str, split: str, label: str | None = None, split_given: bool = False) -> DatasetSource:
        return locate(name, self.cfg.data.root, split, label, split_given)

    def setup(self, stage: str | None = None) -> None:
        d = self.cfg.data
        if stage in (None, "fit"):
            self.train_set = self.format.train_set(self.train_transform, self.decode, self.video_root)
        if stage in (None, "fit", "validate") and self.val_set is None:  # read once (train checks it up front)
            src = self._source(self.eval_dataset, d.val_split)
            self.val_set, self.val_media = self.eval_format.eval_set(self.val_task, src, self.video_root,
                                                                self.allow_missing, self.eval_inputs, d.max_val_videos)
        if stage in (None, "test"):
            self.test_sources = [self._source(self.eval_dataset, split, self.eval_name, self.split_given)
                                 for split in self.eval_splits]
            loaded = [self.eval_format.eval_set(task, src, self.video_root, self.allow_missing, self.eval_inputs)
                      for task, src in zip(self.test_tasks, self.test_sources)]
            self.test_sets = [s for s, _ in loaded]
            if len(loaded) == 1:
                self.test_clips, self.test_media = loaded[0]
            else:
                self.test_clips = self.test_media = SharedClips.of(self.test_sets, [m for _, m in loaded])

    @property
    def test_task(self) -> EvalSetSource:
        return self.test_tasks[0]

    @property
    def test_set(self) -> EvalSet:
        return self.test_sets[0]

    @property
    def test_source(self) -> DatasetSource:
        return self.test_sources[0]

    def test_pairs(self) -> list[tuple[EvalSetSource, EvalSet]]:
        """Each test task with its set, in the order asked for."""
        return list(zip(self.test_tasks, self.test_sets))

    def state_dict(self) -> dict[str, int]:
        """Where the training data stands: the epoch and the batches of it trained on (empty outside training)."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return {}
        return {"epoch": trainer.current_epoch,
                "batches": trainer.fit_loop.epoch_loop.batch_progress.current.processed}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Resume there: the next training loader continues that epoch with the first batch not trained on."""
        self.resume_from = dict(state_dict) or None

    def train_dataloader(self) -> ResumableLoader:
        """The order depends on (seed, epoch) only, every rank takes the same number of full batches and
        the same dataset at each step, so cross-rank gathers match and a resumed run sees the same batches."""
        assert self.train_set is not None
        loader = self.format.train_loader(self.train_set, *rank_world())
        loader.position = self.state_dict
        if self.resume_from:  # read once: a later loader (another fit) starts from its epoch's beginning
            loader.load_state_dict(self.resume_from)
            self.resume_from = None
        return loader

    def eval_loader(self, eset: EvalSet, media: ClipMedia | None = None) -> DataLoader:
        """Each rank encodes a contiguous shard of the clips, without padding; VTPModule gathers and trims.
        ``media``: where a clip's video comes from (the data format's; None: the clip's file)."""
        d = self.cfg.data
        frames = d.eval_num_frames or d.num_frames
        ds = EvalClipDataset(eset, frames, self.eval_transform, d.eval_sampling, self.decode, self.eval_inputs, media)
        rank, world = rank_world()
        return DataLoader(ds, batch_size=d.eval_batch_size, sampler=ShardSampler(len(ds), rank, world),
                          **loader_args(self.cfg))

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None
        return self.eval_loader(self.val_set, self.val_media)

    def test_dataloader(self) -> DataLoader:
        assert self.test_clips is not None
        return self.eval_loader(self.test_clips, self.test_media)
