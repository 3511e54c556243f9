"""Lightning ``Trainer`` settings (``trainer.*``, ``eval --devices / --accelerator``) refused with one sentence, before
anything is written: Lightning raises its own exception types (``MisconfigurationException``, ``ValueError`` for a
precision name, ``ModuleNotFoundError`` for a TPU) when the Trainer is built, after a run dir would exist."""

from __future__ import annotations

from typing import Any

import lightning as L

from vtp_bench.errors import ConfigError

_RAISED = (ValueError, TypeError, ImportError, RuntimeError)


def make_trainer(where: str, **kwargs: Any) -> L.Trainer:
    """``L.Trainer(**kwargs)``, or a ConfigError naming ``where`` (the keys or options that set them) and Lightning's
    reason."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return L.Trainer(**kwargs)
    except (MisconfigurationException, *_RAISED) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{where}: Lightning cannot run with these settings on this machine: {reason}") from None


def check_trainer_settings(trainer_cfg: dict[str, Any]) -> None:
    """Build (and drop) a Trainer with the run's ``trainer.*`` settings, writing nothing."""
    make_trainer("trainer.* (the experiment or the command line)", **{
        **trainer_cfg, "logger": False, "enable_checkpointing": False, "enable_model_summary": False,
        "enable_progress_bar": False, "use_distributed_sampler": False, "default_root_dir": None})
