"""The module side of the engine's target pass: eval mode, the trainer's precision, batches on the
module's device, a progress bar on rank 0 and the time counted as ``timing/<phase>_s``."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..callbacks import ChannelsLast
from ..progress import track
from ..pseudo_labels.passes import Rows, collect_rows


class TargetPasses:
    """Mixin of every task's LightningModule (before the LightningModule base); needs ``network``
    and ``stopwatch``."""

    @torch.no_grad()
    def target_pass(self, loader, per_batch: Callable[[dict], Rows], description: str = "engine pass",
                    phase: str = "engine") -> Rows:
        """``collect_rows`` over ``loader`` with the network in eval mode (see ``sfda.pseudo_labels.passes``):
        ``{"index": (N,), name: (N, ...) or [N tensors]}``, identical on every process."""
        was_training = self.network.training
        self.network.eval()
        shown = track(loader, description, enabled=self.trainer.is_global_zero)
        batches = (self._pass_batch(batch) for batch in shown)
        try:
            with self.stopwatch(phase), self.trainer.precision_plugin.forward_context():
                return collect_rows(batches, per_batch)
        finally:
            self.network.train(was_training)

    def _pass_batch(self, batch: dict) -> dict:
        """``batch`` on the module's device, images in channels-last order when the run uses it (as
        Lightning's own loops get them from ``ChannelsLast``)."""
        moved = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        if getattr(self, "channels_last", False):
            ChannelsLast.convert(moved)
        return moved
