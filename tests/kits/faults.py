"""Fault injection for end-to-end failure tests (importable by the `sfda` subprocess via PYTHONPATH)."""

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
