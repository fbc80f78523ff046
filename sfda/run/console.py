"""What a run prints: the source-only score before the first step, one line per epoch (the task's scores
where labels exist for reporting, the label-free scores, the seconds taken), a closing table (source-only
against adapted) with the run folder, and, when the output is not a terminal, plain periodic progress
lines instead of progress bars (a log file or CI gets a line every ``every_s`` seconds, not a flood)."""

from __future__ import annotations

import sys
import time

import lightning as L
from lightning.pytorch.callbacks import Callback

from .folder import own_run_dir


def headline(metrics: dict, prefix: str) -> dict[str, float]:
    """``{name: value}`` of ``prefix/<name>`` entries without a further ``/`` (no per-class or per-volume)."""
    out = {}
    for key, value in metrics.items():
        name = key[len(prefix) + 1 :] if key.startswith(prefix + "/") else None
        if name and "/" not in name:
            out[name] = float(value)
    return out


def chosen(module: L.LightningModule) -> str:
    """Which weights the run's result is: a validator's pick, the best source-validation epoch, or
    the last epoch."""
    results = getattr(module, "results", {})
    if results.get("selected/by"):
        return (f"checkpoints/selected.ckpt, epoch {int(results['selected/epoch']) + 1}, picked by "
                f"{results['selected/by']} ({results['selected/mode']}; target labels choose nothing)")
    if getattr(module, "best_metric", ""):
        return f"the source artifact from the epoch with the best {module.best_metric}"
    if hasattr(module, "write_source_artifact"):
        return "the source artifact from the last epoch"
    return "the last epoch (target labels choose nothing)"


def joined(values: dict[str, float]) -> str:
    return "  ".join(f"{name} {value:.4f}" for name, value in values.items())


class StoryConsole(Callback):
    """Prints the run's story on rank 0 (see the module docstring); the numbers are the ones logged."""

    def __init__(self):
        self.epoch_started = 0.0
        self.resumed = False  # the epoch Lightning resumed part-way (it skips its on_train_epoch_start)
        self.announced = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_started, self.resumed = time.perf_counter(), True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_started, self.resumed = time.perf_counter(), False
        source = headline(getattr(pl_module, "results", {}), "source_only")
        if trainer.is_global_zero and source and not self.announced:
            print(f"source-only before adaptation: {joined(source)}", flush=True)
        self.announced = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        scores = headline(metrics, getattr(pl_module, "eval_prefix", "target"))
        label_free = headline(metrics, "label_free")
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        parts += [joined(scores)] if scores else []
        parts += [f"label-free: {joined(label_free)}"] if label_free else []
        seconds = time.perf_counter() - self.epoch_started
        parts.append(f"{seconds:.1f} s since the resume" if self.resumed else f"{seconds:.1f} s")
        self.resumed = False
        print(" | ".join(parts), flush=True)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        run = own_run_dir(trainer)  # a collective under DDP: every rank asks
        if not trainer.is_global_zero:
            return
        prefix = getattr(pl_module, "eval_prefix", "target")
        after = headline(trainer.callback_metrics, prefix)
        before = headline(getattr(pl_module, "results", {}), "source_only")
        selected = headline(getattr(pl_module, "results", {}), f"selected/{prefix}")
        lines = []
        if after:
            width = max(len(name) for name in after)
            first = f"{'source-only':>11}  " if before else ""
            last = f"  {'selected':>10}" if selected else ""
            lines.append(f"{prefix:<{width}}  {first}{'last epoch':>10}{last}")
            for name, value in after.items():
                start = (f"{before[name]:>11.4f}  " if name in before else f"{'':>11}  ") if before else ""
                end = (f"  {selected[name]:>10.4f}" if name in selected else "") if selected else ""
                lines.append(f"{name:<{width}}  {start}{value:>10.4f}{end}")
        lines.append(f"result: {chosen(pl_module)}")
        if run is not None:
            lines.append(f"run folder: {run}")
        print("\n".join(lines), flush=True)


class PlainProgress(Callback):
    """Progress as plain lines at most every ``every_s`` seconds (for output that is not a terminal)."""

    def __init__(self, every_s: float = 30.0):
        self.every_s = every_s
        self.last = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if not trainer.is_global_zero or now - self.last < self.every_s:
            return
        self.last = now
        total = trainer.num_training_batches
        loss = trainer.callback_metrics.get("train/loss")
        shown = f"  train/loss {float(loss):.4f}" if loss is not None else ""
        print(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} step {batch_idx + 1}/{total}{shown}",
            flush=True,
        )


def is_terminal() -> bool:
    """True when stdout is an interactive terminal (progress bars), False for a file or a pipe."""
    return sys.stdout.isatty()
