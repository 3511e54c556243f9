"""The one interface every evaluation task implements, so that ``lit.py`` and ``evaluate.py`` score retrieval,
zero-shot classification and temporal grounding the same way, with no branch per task:

1. ``load`` reads a manifest into an evaluation set: its videos (each once), the *clips* the method's video side
   encodes (one per video for retrieval and classification; a video cut at a fixed stride for grounding), and the
   task's queries (captions, class labels, timed sentences).
2. VTPModule encodes every clip once, sharded over the ranks without padding, and gathers them in order.
3. Clips that cannot be decoded: their videos are refused (``MissingVideosError``) unless ``eval.allow_missing``,
   and then dropped from the set with their queries (``drop_videos``) and counted.
4. ``score`` turns the clip embeddings into metrics (percent) and the information the results JSON records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol

from omegaconf import DictConfig
from torch import Tensor

from vtp_bench.data.evalset import Clip, EvalSet  # noqa: F401 (the tasks' set and clip types, defined in data/)
from vtp_bench.methods.base import Embeddings, Method


class Scorer(Protocol):
    """What a task may use of VTPModule: the method, and texts encoded sharded over the ranks and gathered."""

    method: Method
    device: Any

    def encode_texts(self, texts: list[str], batch_size: int) -> Embeddings: ...


class EvalTask:
    """Base class; subclasses register with ``@TASKS.register(name)``."""

    name: ClassVar[str]
    headline: ClassVar[tuple[str, ...]] = ()  # metrics logged during training and shown first in tables

    def default_split(self, dataset: str) -> str:
        return "test"

    def load(self, manifest: Path, video_root: Path | None, allow_missing: bool, cfg: DictConfig,
             max_videos: int | None = None, check_videos: bool = True) -> EvalSet:
        """``check_videos=False``: the method reads no pixels (region features), files are not looked up."""
        raise NotImplementedError

    def score(self, scorer: Scorer, clips: Embeddings, eset: EvalSet, cfg: DictConfig
              ) -> tuple[dict[str, float], dict[str, Any]]:
        raise NotImplementedError


def similarity(scorer: Scorer, text: Embeddings, video: Embeddings) -> Tensor:
    """The method's [N_text, N_video] scores on the module's device, returned on the CPU in fp32."""
    return scorer.method.similarity(text.to(scorer.device), video.to(scorer.device)).float().cpu()
