"""``data.format=files`` (the default): each manifest row's video file, decoded where it lies. Training batches come
from ``MixedBatchSampler`` (one dataset per step, the same on every rank); evaluation decodes each clip's file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vtp_bench.data.catalog import locate
from vtp_bench.data.dataset import DecodeOptions, MixedDataset, VideoTextDataset
from vtp_bench.data.formats.base import ClipMedia, DataFormat, ResumableLoader, loader_args
from vtp_bench.data.inputs import ItemInputs
from vtp_bench.data.manifest import ManifestError
from vtp_bench.data.samplers import MixedBatchSampler
from vtp_bench.data.transforms import VideoTransform
from vtp_bench.registry import DATA_FORMATS


class FileLoader(ResumableLoader):
    """Batches of ``MixedBatchSampler`` over a ``MixedDataset``: the sampler's order and the items' random draws
    are functions of the epoch, so moving both to an epoch (less the batches done) resumes exactly."""

    def seek(self, epoch: int, skip_batches: int) -> None:
        self.batch_sampler.set_epoch(epoch, skip_batches=skip_batches)
        self.dataset.set_epoch(epoch)


@DATA_FORMATS.register("files")
class Files(DataFormat):
    name = "files"

    def check(self) -> None:
        for name in self.cfg.data.train:
            locate(name, self.cfg.data.root, "train")

    def train_set(self, transform: VideoTransform, decode: DecodeOptions | None, video_root: Path | None
                  ) -> MixedDataset:
        d, parts = self.cfg.data, []
        for i, name in enumerate(d.train):
            src = locate(name, d.root, "train")
            parts.append(VideoTextDataset(
                src.manifest, d.num_frames, transform, d.train_sampling, video_root=video_root or src.video_root,
                seed=self.cfg.seed + 7919 * i, decode=decode, name=src.name,
                inputs=ItemInputs.for_dataset(self.cfg, name),
            ))
        return MixedDataset(parts)

    def train_loader(self, train_set: MixedDataset, rank: int, world: int) -> FileLoader:
        batch = self.cfg.data.batch_size
        for part in train_set.parts:  # name the manifest that cannot fill one batch (an empty one, say)
            if len(part) // world < batch:
                raise ManifestError(f"{part.manifest}: {len(part)} training items hold no full batch of {batch} per "
                                    f"rank on {world} rank(s)" + (" (the manifest is empty)" if not len(part) else "")
                                    + "; give it more rows or lower data.batch_size")
        sampler = MixedBatchSampler([len(p) for p in train_set.parts], batch, rank, world, seed=self.cfg.seed,
                                    mode=self.cfg.data.mix)
        return FileLoader(train_set, batch_sampler=sampler, **loader_args(self.cfg))

    def eval_set(self, task: Any, source: Any, video_root: Path | None, allow_missing: bool, inputs: ItemInputs,
                 max_videos: int | None = None) -> tuple[Any, ClipMedia | None]:
        # a method that reads no pixels (region features only) needs no video file: they are not looked up
        eset = task.load(source.manifest, video_root or source.video_root, allow_missing, self.cfg, max_videos,
                         check_videos=inputs.video)
        return eset, None
