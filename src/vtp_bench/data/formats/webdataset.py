"""``webdataset``: WebDataset tar shards (``vtp-bench data shard``, or video2dataset's output), for training
(``data.format``) and evaluation (``data.eval_format``) alike (how, and why: ``data/shards.py``, docs/data_shards.md).

- Training reads each ``data.train`` entry's shards (``shards.locate_shards``: ``<data.root>/<name>/shards/train/``
  for a dataset name) in ranges of samples, a worker lane each; a resume re-reads the steps done as bytes.
- Evaluation reads the split's manifest for the set (texts, ids, windows) and each video's bytes from the shards
  beside it, ``<manifest dir>/shards/<manifest stem>/`` (what ``data shard <manifest>`` writes), found by offset.
  A video the shards lack is refused unless ``--allow-missing``, as a missing file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vtp_bench.data.catalog import DataNotFoundError, DatasetSource
from vtp_bench.data.dataset import DecodeOptions
from vtp_bench.data.evalset import MissingVideosError
from vtp_bench.data.formats.base import ClipMedia, DataFormat
from vtp_bench.data.inputs import ItemInputs
from vtp_bench.data.shard_write import INDEX, default_shard_dir
from vtp_bench.data.shards import (
    ShardLoader,
    ShardTrainSet,
    ShardVideos,
    check_inputs,
    load_shard_set,
    locate_shards,
    shard_train_set,
    video_members,
)
from vtp_bench.data.transforms import VideoTransform
from vtp_bench.registry import DATA_FORMATS


def eval_shards(source: DatasetSource) -> Path:
    """The shard folder of an evaluation split (``data shard <manifest>``'s default), or an error saying how to
    write it."""
    folder = default_shard_dir(source.manifest)
    if not (folder / INDEX).is_file() and not any(folder.glob("*.tar")):
        raise DataNotFoundError(
            f"data.eval_format=webdataset reads the videos of {source.name} (split {source.split}) from its shards, "
            f"and {folder} holds none; write them with `vtp-bench data shard {source.manifest} --once-per-video`, or "
            "read the video files with data.eval_format=files")
    return folder


@DATA_FORMATS.register("webdataset")
class WebDataset(DataFormat):
    name = "webdataset"

    def check(self) -> None:
        d = self.cfg.data
        for name in d.train:  # counted from index.json, or from the tar headers of a folder without one
            load_shard_set(*locate_shards(name, d.root, "train"))

    def check_eval(self, source: Any) -> None:
        eval_shards(source)  # validation reads its split's shards

    def train_set(self, transform: VideoTransform, decode: DecodeOptions | None, video_root: Path | None
                  ) -> ShardTrainSet:
        return shard_train_set(self.cfg, transform, decode)  # shards hold the bytes: no video root

    def train_loader(self, train_set: ShardTrainSet, rank: int, world: int) -> ShardLoader:
        """Each worker yields whole batches of its lane."""
        ds = train_set.configure(rank, world, self.cfg.data.num_workers)
        return ShardLoader(ds, self.cfg.data.num_workers, pin_memory=torch.cuda.is_available())

    def eval_set(self, task: Any, source: Any, video_root: Path | None, allow_missing: bool, inputs: ItemInputs,
                 max_videos: int | None = None) -> tuple[Any, ClipMedia | None]:
        check_inputs(inputs.per_clip().names, "data.eval_format")  # what an evaluation clip loads
        eset = task.load(source.manifest, video_root or source.video_root, allow_missing, self.cfg, max_videos,
                         check_videos=False)  # the videos are looked up in the shards
        folder = eval_shards(source)
        members = video_members(load_shard_set(source.name, folder))
        absent = [i for i, v in enumerate(eset.video_ids) if v not in members]
        if absent and (not allow_missing or len(absent) == len(eset.video_ids)):
            what = ("pass --allow-missing to score the rest (the count is recorded)" if not allow_missing
                    else "nothing is left to score")
            raise MissingVideosError(
                f"{folder}: {len(absent)} of {len(eset.video_ids)} videos of {source.manifest} are not in these "
                f"shards (e.g. {eset.video_ids[absent[0]]!r}); write them with `vtp-bench data shard "
                f"{source.manifest} --once-per-video`, read the files with data.eval_format=files, or {what}")
        if absent:
            eset = eset.drop_videos(absent)
        return eset, ShardVideos({v: members[v] for v in eset.video_ids})
