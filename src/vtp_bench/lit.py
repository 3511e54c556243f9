"""VTPModule: the one LightningModule for every method.

Training sums the method's named loss terms and logs each. Evaluation encodes every video of the split once
(validation/test steps), then at epoch end encodes the texts, scores the full similarity matrix and computes
the retrieval metrics once, on the whole set.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch import Tensor

from vtp_bench import optim
from vtp_bench.config import config_from_dict
from vtp_bench.data.evalset import EvalSet, MissingVideosError
from vtp_bench.data.samplers import shard_bounds
from vtp_bench.distributed import gather_objects, rank_world, tensor_digest, weights_digest
from vtp_bench.methods.base import Embeddings, Method
from vtp_bench.registry import METHODS
from vtp_bench.tasks.base import EvalTask


def build_method(cfg: DictConfig) -> Method:
    return METHODS.get(cfg.method.name)(cfg.method, loss_gather=cfg.loss.gather)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/Inf; the message names the step, the loss terms and the batch's videos."""


class VTPModule(L.LightningModule):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.cfg = config_from_dict(config)
        self.method = build_method(self.cfg)
        self.skipped_videos: list[str] = []  # one entry per skipped training sample (across epochs)
        self.skipped_errors: dict[str, str] = {}
        self.dataset_steps: list[str] = []  # the training dataset of each step this process ran
        self.steps_per_rank: list[int] = []  # training steps each rank ran, gathered at the end of training
        self._resume_at_epoch_start = False  # restored from the end of a finished epoch (start_next_epoch)
        self.last_metrics: dict[str, float] = {}
        self.last_metrics_step: int | None = None  # the optimizer step whose weights last_metrics scored
        self.last_eval_info: dict[str, Any] = {}
        self.last_results: dict[str, tuple[dict[str, float], dict[str, Any]]] = {}  # per task of the last eval
        self.weights_digests: list[str] = []  # one per rank, at the end of training
        self.unchanged_params: list[str] = []  # trainable parameters that training never changed
        self._start_digests: dict[str, bytes] = {}
        self._eval_parts: list[tuple[Tensor, Embeddings]] = []
        self._eval_skipped: list[int] = []

    # --- training -------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        self.dataset_steps.append(batch["dataset"][0] if batch.get("dataset") else "")
        self.skipped_videos.extend(batch["skipped"])
        for vid, err in zip(batch["skipped"], batch["skipped_errors"]):
            self.skipped_errors.setdefault(vid, err)
        if self._any_rank_empty(batch["size"]):
            return None  # every rank skips this step together (a lone skip would hang DDP's all-reduce)
        terms = self.method.losses(batch)
        loss = torch.stack([v for v in terms.values()]).sum()
        if not torch.isfinite(loss):
            detail = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
            raise NonFiniteLossError(
                f"non-finite loss at step {self.global_step}: {detail}; videos in batch: {batch['video_id']}"
            )
        bs = batch["size"]
        for k, v in terms.items():
            self.log(f"train/{k}", v, batch_size=bs)
        for k, v in self.method.train_stats().items():
            self.log(f"train/{k}", v, batch_size=bs)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        return loss

    def _any_rank_empty(self, size: int) -> bool:
        _, world = rank_world()
        if world == 1:
            return size == 0
        flag = torch.tensor([1.0 if size == 0 else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The newest metrics and every rank's RNG (where the data stands is the DataModule's state)."""
        if self._trainer is not None and self.trainer.training:
            # the newest validation: a resumed run that does not validate again still reports it (summary.json)
            checkpoint["vtp_last_metrics"] = {k: float(v) for k, v in self.last_metrics.items()
                                              if hasattr(v, "__float__")}  # plain floats: weights_only loads them
            checkpoint["vtp_last_metrics_step"] = self.last_metrics_step
            # every rank's RNG (dropout masks differ per rank): Lightning calls this hook on every rank and
            # writes rank 0's dict, so the states are gathered into it
            checkpoint["vtp_rng_state"] = gather_objects(rng_state())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        dm = self._trainer.datamodule if self._trainer is not None else None
        legacy = checkpoint.get("vtp_data_position")  # written before the DataModule kept it (its state_dict)
        if legacy and dm is not None and type(dm).__qualname__ not in checkpoint:
            dm.load_state_dict(legacy)
        if self._trainer is not None and self.trainer.state.fn == "fit":  # not when a test starts from it
            self.last_metrics = dict(checkpoint.get("vtp_last_metrics") or self.last_metrics)
            self.last_metrics_step = checkpoint.get("vtp_last_metrics_step", self.last_metrics_step)
        self._resume_at_epoch_start = start_next_epoch(checkpoint)
        states = checkpoint.get("vtp_rng_state")
        if states:  # dropout etc. continue exactly as in an uninterrupted run
            rank, world = rank_world()
            if isinstance(states, dict):  # written before the states were kept per rank
                states = [states]
            if len(states) != world:
                warnings.warn(f"the checkpoint holds the RNG states of {len(states)} ranks, this run has {world}: "
                              "random draws (dropout) will differ from the interrupted run")
            set_rng_state(states[rank % len(states)])

    def on_fit_start(self) -> None:
        t = self.trainer
        print(f"[vtp_bench] rank {t.global_rank}/{t.world_size} (local rank {t.local_rank}, node {t.node_rank}), "
              f"strategy {type(t.strategy).__name__}", flush=True)
        self._start_digests = {n: tensor_digest(p) for n, p in self.method.named_parameters() if p.requires_grad}

    def on_train_start(self) -> None:
        """After an end-of-epoch checkpoint the next epoch starts fresh: with ``max_steps`` Lightning would still
        treat its first batch as a restart and, at batch index -1, take validation as due and skip that batch."""
        if self._resume_at_epoch_start:
            self.trainer.fit_loop.epoch_loop.restarting = False
            self._resume_at_epoch_start = False

    def on_train_end(self) -> None:
        """Skipped videos are counted on every rank; gather them so the report covers the whole run."""
        self.skipped_videos = [v for part in gather_objects(self.skipped_videos) for v in part]
        schedules = gather_objects(self.dataset_steps)  # MixedBatchSampler's invariant, checked ("" = empty batch)
        self.steps_per_rank = [len(steps) for steps in schedules]
        for rank, steps in enumerate(schedules):
            diff = [i for i, (a, b) in enumerate(zip(steps, schedules[0])) if a and b and a != b]
            if diff or len(steps) != len(schedules[0]):
                raise RuntimeError(f"rank {rank} read other training datasets than rank 0 (first at step "
                                   f"{diff[0] if diff else min(len(steps), len(schedules[0]))}); this is a bug")
        for errs in gather_objects(self.skipped_errors):
            for vid, err in errs.items():
                self.skipped_errors.setdefault(vid, err)
        self.weights_digests = gather_objects(weights_digest(self))
        self.unchanged_params = [n for n, p in self.method.named_parameters()
                                 if n in self._start_digests and tensor_digest(p) == self._start_digests[n]]

    def configure_callbacks(self) -> list[L.Callback]:
        return [MethodStepHook()]

    def on_train_epoch_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and getattr(dm, "train_set", None) is not None:
            dm.train_set.set_epoch(self.current_epoch)  # before the workers copy the dataset

    def configure_optimizers(self) -> Any:
        o = self.cfg.optim
        groups = self.method.param_groups(o.lr, o.weight_decay)
        return optim.configure(groups, o, max(1, int(self.trainer.estimated_stepping_batches)))

    # --- evaluation -----------------------------------------------------------------------------------
    def _eval_step(self, batch: dict[str, Any]) -> None:
        self._eval_skipped.extend(batch["skipped_index"])
        if batch["size"] == 0:
            return
        emb = self.method.encode_video(batch)
        self._eval_parts.append((batch["index"].cpu(), emb.detach().to("cpu")))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_start(self) -> None:
        self._eval_parts, self._eval_skipped = [], []

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self) -> None:
        dm = self.trainer.datamodule
        self._finish_eval("val", [(dm.val_task, dm.val_set)], dm.val_set)

    def on_test_epoch_end(self) -> None:
        dm = self.trainer.datamodule
        self._finish_eval("test", dm.test_pairs(), dm.test_clips)

    @torch.no_grad()
    def encode_texts(self, texts: list[str], batch_size: int) -> Embeddings:
        """This rank's contiguous shard of the texts, encoded and gathered in rank order."""
        rank, world = rank_world()
        a, b = shard_bounds(len(texts), rank, world)
        mine = texts[a:b]
        parts = [
            self.method.encode_text({"text": mine[i : i + batch_size]}).detach().to("cpu")
            for i in range(0, len(mine), batch_size)
        ]
        gathered = [p for rank_parts in gather_objects(parts) for p in rank_parts]
        return Embeddings.cat(gathered)

    def _finish_eval(self, prefix: str, pairs: list[tuple[EvalTask, EvalSet]], encoded: Any) -> None:
        """Every rank holds its shard of the clips of ``encoded`` (one set, or several sets' ``SharedClips``):
        gather (collectives called by every rank, before any decision that could differ between ranks), put the
        clips in order, and let each task score its set once, its unreadable videos dropped (or refused).
        ``last_results`` holds every task's (metrics, info); ``last_metrics`` / ``last_eval_info`` the first's."""
        skipped = sorted(i for part in gather_objects(self._eval_skipped) for i in part)
        parts = [p for rank_parts in gather_objects(self._eval_parts) for p in rank_parts]
        self._eval_parts, self._eval_skipped = [], []
        order = torch.cat([i for i, _ in parts]) if parts else torch.zeros(0, dtype=torch.long)
        if len(order) + len(skipped) != len(encoded.clips):
            raise RuntimeError(f"encoded {len(order)} clips and skipped {len(skipped)}, expected {len(encoded.clips)}")
        emb = Embeddings.cat([e for _, e in parts]).index(torch.argsort(order)) if parts else None
        readable = {c: i for i, c in enumerate(sorted(set(range(len(encoded.clips))) - set(skipped)))}
        self.last_results = {}
        for k, (task, eset) in enumerate(pairs):
            positions = encoded.positions[k] if encoded is not eset else list(range(len(eset.clips)))
            metrics, info = self._score(task, eset, emb, positions, readable)
            self.last_results[task.name] = (metrics, info)
            if k == 0:
                self.last_metrics, self.last_metrics_step, self.last_eval_info = metrics, self.global_step, info
            for key in task.headline:
                name = f"{prefix}/{key}" if len(pairs) == 1 else f"{prefix}/{task.name}/{key}"
                self.log(name, metrics[key], prog_bar=k == 0 and key == task.headline[0], sync_dist=False)

    def _score(self, task: EvalTask, eset: EvalSet, emb: Embeddings | None, positions: list[int],
               readable: dict[int, int]) -> tuple[dict[str, float], dict[str, Any]]:
        """One task on its set: ``positions`` are its clips' among the encoded ones, ``readable`` maps an encoded
        clip that was read to its row of ``emb``."""
        clips = eset.clips
        bad = sorted({clips[j].video for j, p in enumerate(positions) if p not in readable})
        if bad and not self.cfg.eval.allow_missing:
            names = [eset.video_ids[i] for i in bad[:5]]
            raise MissingVideosError(
                f"{eset.manifest}: {len(bad)} of {len(eset.video_ids)} videos could not be read (e.g. {names}); "
                "run `vtp-bench data check` on the manifest, or pass --allow-missing to score the rest"
            )
        if emb is None or len(bad) == len(eset.video_ids):
            names = [eset.video_ids[i] for i in bad[:5]]
            raise MissingVideosError(
                f"{eset.manifest}: none of the {len(eset.video_ids)} videos could be read (e.g. {names}; "
                f"{len(eset.missing)} more missing), so nothing readable is left to score; run `vtp-bench data check` "
                "on the manifest"
            )
        dropped = set(bad)
        rows = [readable[p] for j, p in enumerate(positions) if clips[j].video not in dropped]
        if bad:
            eset = eset.drop_videos(bad)
        metrics, info = task.score(self, emb.index(torch.tensor(rows, dtype=torch.long)), eset, self.cfg)
        return metrics, {"task": task.name, **info, "num_missing": len(eset.missing), "missing": eset.missing[:100]}


class MethodStepHook(L.Callback):
    """Calls ``Method.on_train_batch_end(global_step)`` after every training batch, as a callback: Lightning runs
    checkpoint callbacks after every other callback but *before* the LightningModule's own ``on_train_batch_end``,
    so state updated there (EMA / snapshot encoders) would be missing from a checkpoint saved every N steps, and a
    run resumed from it would differ from an uninterrupted one."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        pl_module.method.on_train_batch_end(trainer.global_step)


def start_next_epoch(checkpoint: dict[str, Any]) -> bool:
    """Make a checkpoint saved at the end of a *finished* training epoch resume at the start of the next one.

    Lightning saves ``on_train_epoch_end`` checkpoints with the epoch processed but not completed (a SIGTERM
    checkpoint after the epoch's end has it completed, the epoch loop's counters still full). Without
    ``max_steps`` it resumes them as finished; with ``max_steps`` (iteration-based training) it re-enters the
    finished epoch, runs one more batch in it (the next epoch's first, logged as the old epoch) and then starts
    the next epoch again from its first batch: other weights, and validation one step late. Marking the epoch
    completed and its per-epoch counters reset (what Lightning does right after the hook) gives both modes the
    state of an uninterrupted run. An epoch cut short by ``max_steps`` (``is_last_batch`` false) is left as is:
    a resume with a larger ``max_steps`` continues it. Returns whether the checkpoint was changed."""
    loop = (checkpoint.get("loops") or {}).get("fit_loop")
    if not loop or "epoch_progress" not in loop or "epoch_loop.batch_progress" not in loop:
        return False
    epochs, batches = loop["epoch_progress"], loop["epoch_loop.batch_progress"]
    total = epochs["total"]
    saved_at_epoch_end = (total["ready"] == total["started"] == total["processed"]
                          and total["completed"] in (total["processed"] - 1, total["processed"])
                          and batches["total"]["processed"] == batches["total"]["completed"])
    if not (saved_at_epoch_end and batches.get("is_last_batch")):
        return False
    for part in ("total", "current"):
        epochs[part]["completed"] = epochs[part]["processed"]
    batches["is_last_batch"] = False
    for key, progress in loop.items():  # the epoch loop's per-epoch counters (its totals stay)
        if key.startswith("epoch_loop.") and not key.startswith("epoch_loop.val_loop.") and isinstance(progress, dict):
            for current in _currents(progress):
                current.update({k: 0 for k in current})
    return True


def _currents(node: dict[str, Any]) -> list[dict[str, Any]]:
    """Every nested ``current`` dict under ``node``."""
    found = []
    for key, value in node.items():
        if isinstance(value, dict):
            found.extend([value] if key == "current" else _currents(value))
    return found


def rng_state() -> dict[str, Any]:
    """Global RNG states as plain tensors/tuples (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
