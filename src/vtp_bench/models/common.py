"""Options every encoder shares: freezing a tower and per-block gradient checkpointing."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vtp_bench.models.layouts import CheckpointTarget

T = TypeVar("T", bound="TowerOptions")


class TowerOptions(CheckpointTarget, nn.Module):
    """Mixin for encoders. ``freeze=True``: no parameter trains and the tower stays in eval mode (no dropout or
    drop-path), so its features are fixed, not just its weights; gradients still flow *through* it to inputs
    or hooks that train. ``grad_checkpointing=True``: every block recomputes its activations in backward."""

    freeze: bool = False
    grad_checkpointing: bool = False
    takes_part_of_file = True  # a tower loads its part of a released file (models.checkpoints)
    PRESETS: dict[str, dict[str, Any]] = {}

    @classmethod
    def preset(cls: type[T], name: str, **overrides: Any) -> T:
        """Build a named preset (``PRESETS``), with keyword overrides."""
        if name not in cls.PRESETS:
            raise KeyError(f"unknown {cls.__name__} preset {name!r}; known: {', '.join(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **overrides})

    def finish_init(self, weights: str | None, freeze: bool, grad_checkpointing: bool) -> None:
        """Load a local weights file (any source ``models.checkpoints`` knows), then set the options."""
        if weights is not None:
            from vtp_bench.models.checkpoints import load_official  # only when a file is given

            load_official(self, weights)
        self.set_tower_options(freeze, grad_checkpointing)

    def set_tower_options(self, freeze: bool = False, grad_checkpointing: bool = False) -> None:
        self.grad_checkpointing = bool(grad_checkpointing)
        self.freeze = bool(freeze)
        if self.freeze:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> "TowerOptions":
        return super().train(mode and not self.freeze)

    def run_block(self, block: Callable[..., Any], *args: Any) -> Any:
        """``block(*args)``, checkpointed when the option is on and a backward pass will follow."""
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)
