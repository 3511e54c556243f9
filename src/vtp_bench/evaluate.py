"""Checkpoint -> dataset split -> embeddings -> metrics -> results JSON (one schema for every method)."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import OmegaConf

from vtp_bench import __version__
from vtp_bench.config import ConfigError, config_from_dict, to_dict
from vtp_bench.data.datamodule import VideoTextDataModule
from vtp_bench.lit import VTPModule


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read safely or does not hold a vtp_bench model."""


def load_checkpoint(path: str | Path, trust: bool = False) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; arbitrary unpickling only when the user trusts the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as e:
        if trust:
            raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded with weights_only=True ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}); if you trust the file, pass --trust-checkpoint"
        ) from None


def module_from_checkpoint(path: str | Path, overrides: list[str] = (), trust: bool = False) -> VTPModule:
    ckpt = load_checkpoint(path, trust)
    try:
        config = ckpt["hyper_parameters"]["config"]
    except (KeyError, TypeError):
        raise CheckpointError(f"{path} is not a vtp_bench checkpoint (no hyper_parameters.config)") from None
    if overrides:
        cfg = config_from_dict(config)
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        except Exception as e:
            raise ConfigError(f"bad override {list(overrides)}: {e}") from None
        config = to_dict(cfg)
    module = VTPModule(config)
    module.load_state_dict(ckpt["state_dict"])
    return module


def evaluate(
    ckpt: str | Path,
    dataset: str,
    split: str = "test",
    out: str | Path | None = None,
    allow_missing: bool = False,
    overrides: list[str] = (),
    trust_checkpoint: bool = False,
    accelerator: str = "auto",
    devices: int = 1,
) -> dict[str, Any]:
    """Score one checkpoint on one split; write the results JSON when ``out`` is given."""
    overrides = list(overrides) + ([f"eval.allow_missing={allow_missing}"] if allow_missing else [])
    module = module_from_checkpoint(ckpt, overrides, trust_checkpoint)
    cfg = module.cfg
    dm = VideoTextDataModule(cfg, eval_dataset=dataset, eval_split=split, allow_missing=allow_missing)
    trainer = L.Trainer(accelerator=accelerator, devices=devices, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, precision=cfg.trainer.get("precision", "32-true"),
                        use_distributed_sampler=False, strategy="ddp" if devices > 1 else "auto")
    trainer.test(module, datamodule=dm, verbose=False)
    result = {
        "method": cfg.method.name,
        "experiment": cfg.name,
        "checkpoint": str(ckpt),
        "dataset": dataset,
        "split": split,
        **module.last_eval_info,
        "frames": cfg.data.num_frames,
        "sampler": cfg.data.eval_sampling,
        "img_size": cfg.data.img_size,
        "decoder": "pyav",
        "metrics": module.last_metrics,
        "vtp_bench_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    result["devices"] = trainer.world_size
    if out is not None and trainer.is_global_zero:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    return result
