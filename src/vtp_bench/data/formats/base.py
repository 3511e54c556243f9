"""The interface of a data format (``data.format``): how a dataset's clips are stored and read.

Why a class per format: the checks before a run, the training set with its loader, and where an evaluation clip's
video comes from are what differ between video files and tar shards. With them in one file per format, the
DataModule, ``train`` and ``evaluate`` hold no branch on the format, and another format (clips in an object store,
say) is one new file in this package, registered with ``@DATA_FORMATS.register("name")``.

A format provides:

- ``check()``: before a run dir is made, fail (with the fix) when a training dataset is not there in this format;
- ``train_set(...)`` and ``train_loader(...)``: the training items, and a ``ResumableLoader`` over them (the
  order is a function of (seed, epoch, rank, world) only, so that a resumed run sees the same batches);
- ``eval_set(...)``: a task's evaluation set of one split, and where each clip's video comes from: ``None`` (the
  clip's file) or a callable ``(video_id, path) -> Path | video.VideoBytes``, which must pickle (workers call it);
- ``name`` and ``decoder``: what a results JSON records of how its clips were read (``record``).

Per-format config checks live in the format's file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from vtp_bench.data.dataset import collate

if TYPE_CHECKING:
    from vtp_bench.data.catalog import DatasetSource
    from vtp_bench.data.dataset import DecodeOptions
    from vtp_bench.data.evalset import EvalSet, EvalSetSource
    from vtp_bench.data.inputs import ItemInputs
    from vtp_bench.data.transforms import VideoTransform

ClipMedia = Callable[[str, Path], Any]  # (video id, the manifest's path) -> Path | VideoBytes


def loader_args(cfg: DictConfig) -> dict[str, Any]:
    """Every loader's DataLoader settings. Its own generator: creating an iterator must not draw from the global RNG
    (that would shift dropout masks after a resume); items draw from their own (seed, epoch, index) RNG anyway."""
    return dict(num_workers=cfg.data.num_workers, collate_fn=collate, pin_memory=torch.cuda.is_available(),
                persistent_workers=False, generator=torch.Generator().manual_seed(cfg.seed))


class ResumableLoader(DataLoader):
    """A training loader Lightning can resume (``state_dict`` / ``load_state_dict``, which Lightning looks for on
    the loader). Its state is where the data order stands, ``{"epoch", "batches"}``: the batches of that epoch
    already trained on, as the trainer counts them (``position``, set by the DataModule; a loader cannot count
    them itself, workers read ahead). Loading it continues there: the epoch's order less those batches, or the next
    epoch's start when the epoch was done. A format says how its order is moved (``seek``)."""

    position: Callable[[], dict[str, int]] | None = None

    def seek(self, epoch: int, skip_batches: int) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, int]:
        return dict(self.position()) if self.position is not None else {}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if not state:
            return
        epoch, skip = int(state["epoch"]), int(state["batches"])
        if skip >= len(self):  # saved after the epoch's last batch
            epoch, skip = epoch + 1, 0
        self.seek(epoch, skip)


class DataFormat:
    """Base class; subclasses register with ``@DATA_FORMATS.register(name)`` and set ``name`` to it."""

    name: ClassVar[str]
    decoder: ClassVar[str] = "pyav"  # data/video.py decodes every format's bytes

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def record(self) -> dict[str, str]:
        """What a results JSON says of how its clips were read."""
        return {"data_format": self.name, "decoder": self.decoder}

    def check(self) -> None:
        """Fail before a run dir is made when a training dataset (``data.train``) is not there in this format."""
        raise NotImplementedError

    def check_eval(self, source: DatasetSource) -> None:
        """Fail before a run dir is made when the validation split (``source``) cannot be read in this format (as
        ``data.eval_format``); the split's manifest itself is checked by the caller."""

    def train_set(self, transform: VideoTransform, decode: DecodeOptions | None, video_root: Path | None) -> Any:
        """The training items of ``data.train`` (``video_root``: where relative video paths resolve, if given)."""
        raise NotImplementedError

    def train_loader(self, train_set: Any, rank: int, world: int) -> ResumableLoader:
        """This rank's loader: every rank takes the same number of full batches, of the same dataset at each step."""
        raise NotImplementedError

    def eval_set(self, task: EvalSetSource, source: DatasetSource, video_root: Path | None, allow_missing: bool,
                 inputs: ItemInputs, max_videos: int | None = None) -> tuple[EvalSet, ClipMedia | None]:
        """``task``'s set of the split ``source`` names (its manifest), with videos this format cannot give refused
        (``MissingVideosError``) unless ``allow_missing`` (then left out and listed), and where clips come from."""
        raise NotImplementedError
