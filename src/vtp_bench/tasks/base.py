"""The one interface every evaluation task implements, so that ``lit.py``, ``evaluate.py``, ``report/`` and the CLI
treat retrieval, zero-shot classification, grounding and any task added in one file the same way:

1. ``load`` reads a manifest into an evaluation set: its videos (each once), the *clips* the method's video side
   encodes (one per video for retrieval and classification; a video cut at a fixed stride for grounding), and the
   task's queries (captions, class labels, timed sentences).
2. VTPModule encodes every clip once, sharded over the ranks without padding, and gathers them in order.
3. Clips that cannot be decoded: their videos are refused (``MissingVideosError``) unless ``eval.allow_missing``,
   and then dropped from the set with their queries (``drop_videos``) and counted.
4. ``score`` turns the clip embeddings into metrics (percent) and the information the results JSON records.
5. ``report`` says how its results read: columns, which direction is better, chance, the protocol fields that
   must agree for two results to share a table, the footer line, the plot's axis (``report/`` knows no task).

A task's options are its ``Config`` dataclass, under ``eval.<name>`` (as a method's under ``method``); a field made
with ``config.choice(..., flag="--x")`` is also a flag of ``vtp-bench eval``.

Task modules import torch and the model code inside their functions only: ``vtp-bench list`` / ``compare`` read
the registered tasks' reports without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol

from omegaconf import DictConfig

from vtp_bench.data.evalset import Clip, EvalSet  # noqa: F401 (the tasks' set and clip types, defined in data/)

if TYPE_CHECKING:
    from torch import Tensor

    from vtp_bench.methods.base import Embeddings, Method

Result = dict[str, Any]


class Scorer(Protocol):
    """What a task may use of VTPModule: the method, and texts encoded sharded over the ranks and gathered."""

    method: Method
    device: Any

    def encode_texts(self, texts: list[str], batch_size: int) -> Embeddings: ...


@dataclass(frozen=True)
class Column:
    """One column of a task in the comparison table: ``key`` in the results' ``metrics``."""

    key: str
    label: str
    lower_is_better: bool = False
    proportion: bool = True  # a percentage of the test items (a paper row's ± is binomial); False: a rank, an IoU
    unit: str = "%"  # said in the table's legend when not percent ("rank")
    # the per-item outcomes (``per_query``) the metric is a statistic of, for intervals and tests: their key
    # (default: the metric's own), their ids' key (default ``<direction>/ids`` or ``ids``), and the statistic
    items: str = ""
    ids: str = ""
    statistic: str = "mean"  # mean | median

    @property
    def items_key(self) -> str:
        return self.items or self.key

    @property
    def ids_key(self) -> str:
        return self.ids or (f"{self.key.split('/')[0]}/ids" if "/" in self.key else "ids")


def _no_chance(result: Result) -> float | None:
    return None


@dataclass(frozen=True)
class TaskReport:
    """How a task's results read in tables, footers and plots."""

    label: str  # in table headers: "zero-shot"
    columns: tuple[Column, ...]
    main: str  # the metric plotted per method (a column key)
    main_label: str  # the plot's axis: "text-to-video R@1 (%)"
    order: int = 100  # tables place task groups by this, then by name
    # protocol fields: name -> how to read it from a results JSON; two results of one (dataset, split, task) share
    # a table only when all of them agree (the common ones, frames, decoder, ..., are report.protocol's)
    protocol: dict[str, Callable[[Result], Any]] = field(default_factory=dict)
    describe: Callable[[list[Result]], str] = lambda rs: ""  # the footer's words on a group's results
    chance: Callable[[Result], float | None] = _no_chance  # the main metric's chance level

    def column(self, key: str) -> Column:
        return next(c for c in self.columns if c.key == key)


@dataclass
class NoOptions:
    """A task without options."""


class EvalTask:
    """Base class; subclasses register with ``@TASKS.register(name)``."""

    name: ClassVar[str]
    Config: ClassVar[type] = NoOptions  # the task's options, under eval.<name>
    headline: ClassVar[tuple[str, ...]] = ()  # metrics logged during training and printed after it
    report: ClassVar[TaskReport]
    moved: ClassVar[dict[str, str]] = {}  # eval.<key> of earlier versions (one flat section) -> its field here

    def default_split(self, dataset: str) -> str:
        return "test"

    @classmethod
    def options(cls, cfg: DictConfig) -> Any:
        """This task's section of the config (``eval.<name>``)."""
        return cfg.eval[cls.name]

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


def summary_line(task: type[EvalTask], metrics: dict[str, float]) -> str:
    """``t2v R@1 31.2  t2v R@5 ...``: the task's headline metrics, labelled as its table columns."""
    labels = {c.key: c.label for c in task.report.columns}
    return "  ".join(f"{labels.get(k, k)} {metrics[k]:.1f}" for k in task.headline if k in metrics)
