"""Stopping a run: by a signal (``RunStop``, ``StopTogether``) or after a number of epochs."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException


@dataclass(frozen=True)
class RunStop:
    """A run that a signal stopped (SIGTERM from a scheduler or ``kill``, SIGINT from Ctrl-C): what
    ``sfda.cli.main`` reports and exits with (128 + the signal's number)."""

    signal: signal.Signals
    stage: str
    epoch: int  # the epoch it was in, 1-based as the console prints it
    max_epochs: int
    step: int
    run_dir: Path | None
    checkpoint: Path | None  # the newest checkpoint to resume from, None before the first
    is_global_zero: bool


_stops: list[RunStop] = []  # recorded by RunRecorder.on_exception, taken by the cli


def stop_signal(err: BaseException) -> signal.Signals | None:
    """The signal behind ``err``: SIGTERM (Lightning's ``SIGTERMException``), SIGINT (``KeyboardInterrupt``);
    None for any other error."""
    if isinstance(err, SIGTERMException):
        return signal.SIGTERM
    if isinstance(err, KeyboardInterrupt):
        return signal.SIGINT
    return None


def record_stop(stop: RunStop) -> None:
    """Note ``stop`` for the cli (``take_stop``)."""
    _stops.append(stop)


def take_stop() -> RunStop | None:
    """The stop this process recorded last (None if none), forgetting it."""
    stop = _stops[-1] if _stops else None
    _stops.clear()
    return stop


class StopTogether(Callback):
    """Every process of a run stops at the same training step after a SIGTERM, and none hangs.

    Lightning's SIGTERM handler broadcasts from inside the signal handler, wherever each process happens to
    be: under DDP with one process in a collective of an engine pass and another elsewhere, both hang (seen
    with 2 CPU processes). This replaces that handler (before Lightning installs it, at ``setup``) with one
    that only notes the signal and passes it on to the processes Lightning launched; after every training
    step the processes agree (an all-reduce of the note) and all raise Lightning's stop at that step. On
    one process, or outside ``fit``, the note stops the run directly, as Lightning's handler does;
    ``predict``, whose loop Lightning never stops, stops after the batch the signal came in (all processes
    together)."""

    def __init__(self):
        self.received = False
        self.trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.received, self.trainer = False, trainer
        trainer._signal_connector._sigterm_notifier_fn = self.notify  # read when the handlers are installed

    def notify(self, signum, frame) -> None:
        """The SIGTERM handler: note it, pass it on once to launched processes; no collective here."""
        trainer = self.trainer
        if not self.received and trainer.strategy.launcher is not None:
            trainer.strategy.launcher.kill(signum)
        self.received = True
        if trainer.world_size == 1 or trainer.state.fn != "fit":
            trainer._signal_connector.received_sigterm = True

    def agreed(self, trainer, pl_module) -> bool:
        """Whether any process noted a SIGTERM, here or in Lightning's flag (an all-reduce of the note under
        DDP: run on every rank)."""
        received = self.received or trainer.received_sigterm
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            noted = torch.tensor([float(received)], device=pl_module.device)
            torch.distributed.all_reduce(noted, op=torch.distributed.ReduceOp.MAX)
            return noted.item() > 0
        return received

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.world_size > 1 and self.agreed(trainer, pl_module):
            trainer._signal_connector.received_sigterm = True  # every process, at this step: Lightning stops

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        """Lightning's predict loop never reads the SIGTERM note (fit, validate and test do): stop here, every
        process at the same batch, as they do."""
        if self.agreed(trainer, pl_module):
            raise SIGTERMException


class StopAfterEpochs(Callback):
    """Stop cleanly after ``epochs`` training epochs without changing the schedule (which
    depends on ``max_epochs``): for time-sliced or preemptible machines; resume with ``--ckpt_path``.

    Args:
        epochs: number of epochs to run in this session.
    """

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True
