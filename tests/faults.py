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
