"""Callbacks that make runs faster without changing their arithmetic: channels-last, folded BatchNorm."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class ChannelsLast(Callback):
    """Keep 4-D (5-D) weights and input image batches in channels-last (-3d) memory order.

    The same arithmetic, laid out so convolutions and pooling run faster (oneDNN on CPU, tensor cores
    on GPU): about 25-40% more training images/s for the digit CNNs on this repository's CPU, and
    max pooling about 6x faster. The engine's target passes convert their batches too
    (``pl_module.channels_last``, read by ``TargetPasses``). A network without 4-D or 5-D weights
    (an MLP) is left alone: the conversion would change nothing. Nor is a classification network whose
    forward fails on a channels-last batch (one that flattens with ``.view``, as many published models
    do): a probe forward at set-up finds it, the weights go back to the usual order and the console says
    so. Added to every run by the ``sfda`` command unless the recipe sets ``channels_last: false``.
    """

    FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}

    def __init__(self):
        self.active = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.probed = False
        with torch.no_grad():
            for tensor in self.layout_tensors(pl_module):
                tensor.data = restrided(tensor.data, self.FORMATS[tensor.dim()])
                self.active = True
        pl_module.channels_last = self.active

    def layout_tensors(self, pl_module: L.LightningModule) -> list[torch.Tensor]:
        return [t for t in [*pl_module.parameters(), *pl_module.buffers()] if t.dim() in self.FORMATS]

    def probe(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Once, before the first batch (the module's own set-up has given the datamodule its input
        spec): back to the usual layout if the network cannot take a channels-last batch
        (``takes_channels_last``)."""
        if getattr(self, "probed", True) or not self.active:
            return
        self.probed = True
        if takes_channels_last(trainer, pl_module):
            return
        with torch.no_grad():
            for tensor in self.layout_tensors(pl_module):
                tensor.data = tensor.data.contiguous()
        self.active = pl_module.channels_last = False
        if trainer.is_global_zero:
            print("channels_last: off, the network's forward fails on a channels-last batch (it flattens "
                  "with .view); set channels_last: false in the recipe to skip this probe", flush=True)

    def on_fit_start(self, trainer, pl_module):
        self.probe(trainer, pl_module)

    def on_validation_start(self, trainer, pl_module):
        self.probe(trainer, pl_module)

    def on_test_start(self, trainer, pl_module):
        self.probe(trainer, pl_module)

    def on_predict_start(self, trainer, pl_module):
        self.probe(trainer, pl_module)

    @classmethod
    def convert(cls, batch) -> None:
        """Put ``batch["image"]`` (a dict batch's 4-D or 5-D image tensor) in channels-last order."""
        image = batch.get("image") if isinstance(batch, dict) else None
        if isinstance(image, torch.Tensor) and image.dim() in cls.FORMATS:
            batch["image"] = image.contiguous(memory_format=cls.FORMATS[image.dim()])

    def _convert(self, batch) -> None:
        if self.active:
            self.convert(batch)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._convert(batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._convert(batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._convert(batch)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._convert(batch)


def takes_channels_last(trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
    """Whether a classification network (``pl_module.network``, images as the datamodule's ``input_spec``
    says) runs a 2-image channels-last batch; a forward that fails because it reshapes with ``.view`` says
    no. True where there is no such spec (other tasks) or the probe fails for another reason (the run
    itself will say what is wrong)."""
    spec = getattr(getattr(trainer, "datamodule", None), "input_spec", None)
    network = getattr(pl_module, "network", None)
    size, channels = getattr(spec, "size", None), getattr(spec, "channels", None)
    if not isinstance(network, torch.nn.Module) or not isinstance(size, int) or not isinstance(channels, int):
        return True
    device = next(network.parameters()).device
    probe = torch.zeros(2, channels, size, size, device=device).contiguous(memory_format=torch.channels_last)
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            network(probe)
    except RuntimeError as err:
        return "view size is not compatible" not in str(err)
    except Exception:  # noqa: BLE001 - the probe only looks for the .view failure
        return True
    finally:
        network.train(was_training)
    return True


class FoldBatchNorm(Callback):
    """Run evaluation (validate, test, predict) and the engine's full target passes on a copy of the
    network with eval-mode BatchNorm folded into the convolution before it (``sfda.models.
    batchnorm_folding``): the same predictions up to float rounding, with about 9% faster eval-mode
    forwards for the SVHN digit CNN on this repository's CPU. Applies to classification modules (those
    with ``start_folded_inference``); the copy is rebuilt at every evaluation and engine pass and
    dropped before any training step. Added to every run by the ``sfda`` command unless the recipe sets
    ``fold_batchnorm: false``."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.fold_batchnorm = hasattr(pl_module, "start_folded_inference")

    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if getattr(pl_module, "fold_batchnorm", False):
            pl_module.start_folded_inference()

    def _stop(self, trainer: L.Trainer, pl_module: L.LightningModule, *_) -> None:
        if hasattr(pl_module, "stop_folded_inference"):
            pl_module.stop_folded_inference()

    on_validation_epoch_start = on_test_epoch_start = on_predict_epoch_start = _start
    on_validation_epoch_end = on_test_epoch_end = on_predict_epoch_end = _stop
    on_train_batch_start = on_exception = _stop  # weights are about to change, or the run failed


def restrided(tensor: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """``tensor`` copied into ``layout``'s strides even where ``contiguous(memory_format=...)`` would keep
    it as it is: a weight with one input channel (20, 1, 5, 5) counts as channels-last already, keeps
    NCHW strides, and convolutions then pick NCHW for their output (the first layer of every
    one-channel network, with NCHW max pooling after it: 5 times slower)."""
    return torch.empty_like(tensor, memory_format=layout).copy_(tensor)
