"""How long training waits for its data: ``train/data_time`` (seconds from the end of one step to the start of the
next, when the batch has arrived: the DataLoader could not keep up) and ``train/data_share`` (that time over the
whole step, wait + compute), logged every step as open_clip logs ``data_time``. A share near 0 means the model is
the bottleneck; near 1, decoding or reading is (more ``data.num_workers``, ``data compress``, shards)."""

from __future__ import annotations

import time
from typing import Any

import lightning as L


class DataTime(L.Callback):
    def __init__(self) -> None:
        self._last_end: float | None = None
        self._wait = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_end = time.perf_counter()  # the first batch's wait includes starting the workers

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        now = time.perf_counter()
        self._wait = now - self._last_end if self._last_end is not None else 0.0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        now = time.perf_counter()
        step = now - self._last_end if self._last_end is not None else 0.0
        self._last_end = now
        pl_module.log("train/data_time", self._wait, batch_size=1)
        pl_module.log("train/data_share", self._wait / step if step > 0 else 0.0, batch_size=1)
