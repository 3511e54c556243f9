"""The few process-group helpers every module shares (one place, so ranks are read the same way)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def rank_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]``; every rank must call it."""
    _, world = rank_world()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def is_launch_rank_zero() -> bool:
    """Whether this process will be global rank 0, read from the launcher's environment before any process group
    exists: torchrun's ``RANK``, SLURM's ``SLURM_PROCID`` (as Lightning's SLURM environment reads it), else
    ``NODE_RANK`` / ``LOCAL_RANK`` (Lightning's own launcher sets them in the processes it starts)."""
    import os

    from lightning.fabric.plugins.environments import SLURMEnvironment

    env = os.environ
    if dist.is_available() and dist.is_torchelastic_launched():
        return int(env.get("RANK", 0)) == 0
    if SLURMEnvironment.detect():
        return int(env.get("SLURM_PROCID", 0)) == 0
    return int(env.get("NODE_RANK", env.get("GROUP_RANK", 0))) == 0 and int(env.get("LOCAL_RANK", 0)) == 0


def tensor_digest(t: torch.Tensor) -> bytes:
    """sha256 of a tensor's shape, dtype and bytes (exact equality, without keeping a copy)."""
    import hashlib

    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(str((tuple(t.shape), t.dtype)).encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()


def weights_digest(module: Any) -> str:
    """sha256 over every parameter and buffer (names, shapes, bytes): equal on every rank of a healthy DDP run."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode() + tensor_digest(t))
    return h.hexdigest()
