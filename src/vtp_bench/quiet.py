"""What a command prints besides its own output, in one place: Lightning's chatter that is no concern of the user
is dropped by its exact text, everything else (a dataloader with few workers, skipped videos, ...) still shows.

``quiet_lightning`` is called by the CLI entry and wherever a Trainer is built (``train``, ``evaluate``), so the
Python API is as quiet as the commands. ``vtp-bench train --verbose`` keeps Lightning's accelerator banner and
its internal notes, and prints the model summary that is otherwise only written to ``<run dir>/model_summary.txt``.
``status`` says on stderr what a slow step is doing, so that loading a model is not half a minute of silence.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

# Lightning's INFO lines of every run: the accelerator banner, how it counted steps, the seed (in the config)
_CHATTER = re.compile(r"(GPU|TPU) available: \S+, us(ed|ing): |Loading `\w+` to estimate number of stepping batches"
                      r"|(\[rank: \d+\] )?Seed set to \d+"
                      r"|The following callbacks returned in `LightningModule.configure_callbacks` will override")
_ADVERT = re.compile(r"💡 Tip: .*litlogger")  # an advertisement: dropped even with --verbose
# rank_zero_info logs to whichever of the two rank_zero loggers was imported last; seed_everything to its own
_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
            "lightning.fabric.utilities.seed")
# torch's deprecation of LeafSpec, raised inside Lightning's own code on every step: nothing a user can change
PYTREE_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"

_verbose = False


class _LightningChatter(logging.Filter):
    """Drops the records above by their text (the logger keeps its level: every other message passes)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (_ADVERT.match(text) or (not _verbose and _CHATTER.match(text)))


_FILTER = _LightningChatter()


def quiet_lightning(verbose: bool | None = None) -> None:
    """Install the filters (idempotent); ``verbose`` (the CLI's ``--verbose``) is kept for later calls."""
    global _verbose
    if verbose is not None:
        _verbose = verbose
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    warnings.filterwarnings("ignore", message=PYTREE_WARNING, category=FutureWarning)
    # one line per metric name: MLflow drops the '@' of R@1 (logged as R1; README, "Trackers")
    warnings.filterwarnings("ignore", message="MLFlow only allows")


def is_verbose() -> bool:
    return _verbose


def model_summary_callback(run_dir: Callable[[], Path]) -> Any:
    """Lightning's ModelSummary, written to ``<run dir>/model_summary.txt`` (printed too when verbose): the table
    is the same at every start of a run, so it belongs in the run dir, not on the console. ``run_dir`` is asked at
    fit start (rank 0 knows its run dir by then)."""
    from lightning.pytorch.callbacks import ModelSummary
    from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

    from vtp_bench.atomic import atomic_write_text

    class RunDirModelSummary(ModelSummary):
        def summarize(self, summary_data: list[tuple[str, list[str]]], total_parameters: int,  # type: ignore[override]
                      trainable_parameters: int, model_size: float, total_training_modes: dict[str, int],
                      total_flops: int = 0, **kwargs: Any) -> None:
            table = _format_summary_table(total_parameters, trainable_parameters, model_size, total_training_modes,
                                          total_flops, *summary_data)
            path = run_dir() / "model_summary.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, table + "\n")
            if _verbose:
                print(table, flush=True)

    return RunDirModelSummary()


def status(message: str) -> None:
    """One line on stderr (stdout stays the command's output), from the launching process only: its rank read from
    the launchers' environment as ``distributed.is_launch_rank_zero`` does, without importing torch first."""
    if all(os.environ.get(k, "0") in ("", "0") for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "NODE_RANK")):
        print(message, file=sys.stderr, flush=True)
