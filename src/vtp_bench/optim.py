"""The optimizer and learning-rate schedule of every method, from ``cfg.optim``.

- Parameter groups come from ``Method.param_groups``; ``decay_groups`` is the one rule for splitting a set of
  parameters into weight-decayed and not: biases, normalisation layers, embeddings (``nn.Embedding``, position /
  time / class / mask tokens) and other 1-d or scalar parameters (e.g. ``logit_scale``) get no decay, as in
  open_clip and timm.
- ``lr_factor`` is the schedule in closed form (the multiplier of every group's base learning rate at an
  optimizer step); ``configure`` wraps it in a ``LambdaLR`` stepped once per optimizer step.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import nn

from vtp_bench.choices import SCHEDULERS  # noqa: F401 (kept here for the modules that use it)

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}

# parameter leaf names that are embeddings or learned tokens, whatever their module
EMBEDDING_NAMES = ("pos_embed", "temporal_embed", "cls_token", "mask_token", "positional_embedding",
                   "class_embedding", "position_embeddings", "token_type_embeddings", "word_embeddings")
NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.RMSNorm)


def no_decay_names(module: nn.Module) -> set[str]:
    """Names (as in ``module.named_parameters()``) of the parameters that take no weight decay."""
    out: set[str] = set()
    for mod_name, mod in module.named_modules():
        pre = f"{mod_name}." if mod_name else ""
        for leaf, p in mod.named_parameters(recurse=False):
            name = pre + leaf
            if (p.ndim <= 1 or isinstance(mod, NORM_TYPES + (nn.Embedding,)) or leaf in EMBEDDING_NAMES
                    or leaf.endswith(EMBEDDING_NAMES)):
                out.add(name)
    return out


def decay_groups(module: nn.Module, lr: float, weight_decay: float,
                 names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Two groups at ``lr``: decayed and not (``no_decay_names``). ``names`` restricts them to some of the
    module's parameters (a method with two learning rates calls this once per set). Frozen parameters
    (``requires_grad=False``) are left out; empty groups are dropped."""
    params = dict(module.named_parameters())
    chosen = list(params) if names is None else list(names)
    skip = no_decay_names(module)
    decay = [params[n] for n in chosen if params[n].requires_grad and n not in skip]
    plain = [params[n] for n in chosen if params[n].requires_grad and n in skip]
    groups = [{"params": decay, "lr": lr, "weight_decay": weight_decay},
              {"params": plain, "lr": lr, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def lr_factor(step: int, scheduler: str, warmup_steps: int, total_steps: int,
              milestones: Iterable[int] = (), gamma: float = 0.1) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, then ``constant`` (1),
    ``cosine`` (half a cosine from 1 at the end of warm-up to 0 at ``total_steps``) or ``step`` (``gamma`` to the
    number of ``milestones`` at or before ``step``; milestones count optimizer steps from the start).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if scheduler == "constant":
        return 1.0
    if scheduler == "cosine":
        p = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, p)))
    if scheduler == "step":
        return gamma ** sum(1 for m in milestones if step >= m)
    raise ValueError(f"optim.scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")


def configure(groups: list[dict[str, Any]], o: Any, total_steps: int) -> dict[str, Any]:
    """Lightning's ``configure_optimizers`` return value for parameter groups and ``cfg.optim``."""
    if o.name not in OPTIMIZERS:
        raise ValueError(f"optim.name must be one of {', '.join(OPTIMIZERS)}, got {o.name!r}")
    opt = OPTIMIZERS[o.name](groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)
    milestones, gamma = tuple(o.milestones), o.gamma
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, o.scheduler, o.warmup_steps, total_steps, milestones, gamma))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "name": "lr"}}
