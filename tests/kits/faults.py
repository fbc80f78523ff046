"""Fault injection for end-to-end failure tests: callbacks a recipe names as ``kits.faults.<Name>``
(in-process, or in an `sfda` subprocess with tests/ on PYTHONPATH)."""

import lightning as L
import torch


class PoisonWeightsAtEpoch(L.Callback):
    """Set every trainable weight to NaN at the start of training epoch ``epoch``: the next loss is NaN."""

    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                for p in pl_module.parameters():
                    if p.requires_grad:
                        p.fill_(float("nan"))


class InfRunningVarAtEpoch(L.Callback):
    """Set every BatchNorm running variance to inf at the start of training epoch ``epoch``: the loss
    stays finite (training uses batch statistics) but the weights a checkpoint would hold are broken."""

    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            for name, buffer in pl_module.named_buffers():
                if name.endswith("running_var"):
                    buffer.fill_(float("inf"))


class RequestStop(L.Callback):
    """What a signal does, delivered at a known point: at training batch ``batch`` of epoch ``epoch``
    (both 0-based), SIGTERM sets Lightning's flag as its handler would, SIGINT raises KeyboardInterrupt as
    Python's handler would."""

    def __init__(self, signal: str = "SIGTERM", epoch: int = 1, batch: int = 0):
        self.signal, self.epoch, self.batch = signal, epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            self.deliver(trainer)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:
            self.deliver(trainer)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:
            self.deliver(trainer)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if trainer.state.fn == "validate" and batch_idx == 0:  # `sfda validate`, not fit's validation
            self.deliver(trainer)

    def deliver(self, trainer):
        if self.signal == "SIGINT":
            raise KeyboardInterrupt
        trainer._signal_connector.received_sigterm = True


class CollapseAtEpoch(L.Callback):
    """At the start of training epoch ``epoch`` (0-based) push the classifier's bias for class 0 so far up
    that every sample is predicted class 0: a collapse, with finite weights."""

    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                pl_module.network.head.bias[0] = 1e4

