"""What every run writes about itself: ``run_info.json``, ``results.json`` and ``config.yaml``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import SaveConfigCallback

from .checks import TrainingCollapsed
from .folder import git_commit, json_safe, last_checkpoint, own_run_dir, versions
from .stops import RunStop, record_stop, stop_signal


def task_name(pl_module: L.LightningModule) -> str | None:
    """The task ``pl_module`` works on: the name of the task it holds (classification, segmentation,
    detection, pose); before it holds one (source training builds it with the data), the one task its
    class works on (its ``tasks``); else None."""
    task = getattr(pl_module, "task", None)
    if task is not None:
        return task.name
    tasks = getattr(type(pl_module), "tasks", ())
    return tasks[0] if len(tasks) == 1 else None


def _scalar(value) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


class RunRecorder(Callback):
    """Writes ``run_info.json`` (seed, versions, git commit, command) at start and
    ``results.json`` (flat metric keys, ``wall_s``) at the end of fit and of test, rank 0 only.

    Timings in ``results.json``: ``timing/epoch_s`` (mean wall seconds of a training epoch of
    this session, from epoch start to epoch end, so including per-epoch engine passes and any
    validation run inside the epoch), ``timing/validation_s`` (those validations' seconds),
    ``timing/steps_s`` (mean wall seconds from an epoch's first training batch to its last: the steps
    and the data loading between them, not the engine pass before nor the validation after; a
    validation inside the epoch, ``val_check_interval`` < 1, falls inside it),
    ``timing/train_images_per_s`` (global training images per second of epoch time) and
    ``timing/<phase>_s`` from the module's stopwatch (``engine``: pseudo-label passes, clustering, bank
    writes and kNN within epochs; ``bank_fill``: the initial bank pass; ``evaluation``: source-only
    evaluation) and ``timing/engine_share`` = engine / epoch time. An epoch a resumed run finishes (one
    its checkpoint was written inside) is no whole epoch of this session: it is left out of these.

    A run stopped by a signal (SIGTERM, Ctrl-C) still writes ``results.json``, with what it measured so far
    and ``stopped: true``, ``stopped/signal`` (``SIGTERM``, ``SIGINT``), ``stopped/epoch`` (1-based),
    ``stopped/step`` and ``stopped/checkpoint`` (the one to resume from, or null); a run the collapse guard
    stopped writes it with ``collapsed: true`` and the guard's figures (``collapsed/*``, see
    ``CollapseGuard``).
    """

    def __init__(self):
        self.started = time.time()
        self.epoch_seconds: list[float] = []
        self.steps_seconds: list[float] = []  # first batch start -> last batch end, per epoch
        self._first_batch_started: float | None = None
        self._last_batch_ended = 0.0
        self.validation_seconds = 0.0  # validations inside fit epochs (part of the epoch seconds)
        self._epoch_started: float | None = None  # None: the epoch was resumed part-way, or none started
        self._validation_started = 0.0
        self.written: set[Path] = set()  # results files this recorder wrote (a later stage adds to them)
        self.run_dir: Path | None = None  # found at setup: on_exception must not call a collective

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.started = time.time()
        log_dir = self.run_dir = own_run_dir(trainer)
        if trainer.is_global_zero and log_dir:
            method = type(pl_module)
            info = {"stage": stage, "task": task_name(pl_module), "method": method.__name__,
                    "method_class": f"{method.__module__}.{method.__name__}",
                    "seed": int(os.environ.get("PL_GLOBAL_SEED", -1)), "versions": versions(),
                    "git_commit": git_commit(), "processes": trainer.world_size,
                    "precision": str(trainer.precision), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            (Path(log_dir) / "run_info.json").write_text(json.dumps(info, indent=2))

    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_started = time.perf_counter()
        self._first_batch_started = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._first_batch_started is None:
            self._first_batch_started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._last_batch_ended = time.perf_counter()

    def on_validation_start(self, trainer, pl_module):
        self._validation_started = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.validation_seconds += time.perf_counter() - self._validation_started

    def on_train_epoch_end(self, trainer, pl_module):
        if self._epoch_started is None:  # Lightning skips on_train_epoch_start for an epoch it resumes
            return
        self.epoch_seconds.append(time.perf_counter() - self._epoch_started)
        if self._first_batch_started is not None:
            self.steps_seconds.append(self._last_batch_ended - self._first_batch_started)
        # per epoch in metrics.csv for `sfda report`; results.json keeps the mean (timing/epoch_s)
        pl_module.log("time/epoch_s", self.epoch_seconds[-1], on_step=False, on_epoch=True, sync_dist=False)
        self._epoch_started = None

    def _timings(self, trainer, pl_module) -> dict[str, float]:
        out = {f"timing/{phase}_s": seconds
               for phase, seconds in getattr(pl_module, "stopwatch", None).totals.items()} \
            if hasattr(pl_module, "stopwatch") else {}
        if self.epoch_seconds:
            epoch_s = sum(self.epoch_seconds) / len(self.epoch_seconds)
            out["timing/epoch_s"] = epoch_s
            global_batch = (getattr(trainer.datamodule, "batch_size", None) if trainer.datamodule is not None
                            else None)
            if global_batch and trainer.num_training_batches not in (None, float("inf")):
                out["timing/train_images_per_s"] = trainer.num_training_batches * global_batch / epoch_s
            out["timing/validation_s"] = self.validation_seconds
            if self.steps_seconds:
                out["timing/steps_s"] = sum(self.steps_seconds) / len(self.steps_seconds)
            if "timing/engine_s" in out:
                out["timing/engine_share"] = out["timing/engine_s"] / sum(self.epoch_seconds)
        return out

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str,
               extra: dict | None = None) -> None:
        """``results.json``; ``extra`` (a stopped run's record) is written last, from the run folder found at
        setup (no collective: the other processes may be stopping too)."""
        log_dir = own_run_dir(trainer) if extra is None else self.run_dir
        if not trainer.is_global_zero or not log_dir:
            return
        path = Path(log_dir) / "results.json"
        results = json.loads(path.read_text()) if path in self.written else {}
        results.update(getattr(pl_module, "results", {}))
        for key, value in trainer.callback_metrics.items():  # what this run measured wins
            if not key.startswith("time/") and (number := _scalar(value)) is not None:
                results[key] = number
        if stage == "fit":
            results.update(self._timings(trainer, pl_module))
        results[f"{stage}/wall_s"] = time.time() - self.started
        results["wall_s"] = results[f"{stage}/wall_s"]
        results["epochs"] = trainer.current_epoch
        results.update(extra or {})
        path.write_text(json.dumps(json_safe(results), indent=2, sort_keys=True, allow_nan=False))
        self.written.add(path)

    def on_fit_end(self, trainer, pl_module):
        self._write(trainer, pl_module, "fit")

    def on_test_end(self, trainer, pl_module):
        self._write(trainer, pl_module, "test")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """A stop by a signal or by the collapse guard: record it (``take_stop``), write ``results.json``."""
        sig = stop_signal(exception)
        stage = trainer.state.fn.value if trainer.state.fn is not None else "fit"
        if sig is not None:
            stop = RunStop(sig, stage, trainer.current_epoch + 1, trainer.max_epochs, trainer.global_step,
                           self.run_dir, last_checkpoint(trainer, self.run_dir), trainer.is_global_zero)
            record_stop(stop)
            kept = str(stop.checkpoint) if stop.checkpoint else None
            self._write(trainer, pl_module, stage, {"stopped": True, "stopped/signal": sig.name,
                                                    "stopped/epoch": stop.epoch, "stopped/step": stop.step,
                                                    "stopped/checkpoint": kept})
        elif isinstance(exception, TrainingCollapsed):
            self._write(trainer, pl_module, stage, {"collapsed": True})


class RunConfigSaver(SaveConfigCallback):
    """Lightning CLI's ``config.yaml`` writer, into the run's own folder only (never the shared root)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if own_run_dir(trainer) is not None:
            super().setup(trainer, pl_module, stage)
