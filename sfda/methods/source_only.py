"""Source-only: the source model evaluated on the target as it is, for every task (the reference every
method must beat)."""

from __future__ import annotations

import torch

from ..models import SourceModel
from ..tasks.adaptation import Adaptation


class SourceOnly(Adaptation):
    """No adaptation: ``sfda test`` / ``sfda validate`` / ``sfda predict`` score the source model and need no
    checkpoint; ``sfda fit`` is refused, except on a stream (online test-time adaptation), where it predicts
    each batch with the source model in eval mode (the stream's "source" row). Works on every task.

    Args:
        source: the source artifact (see ``Adaptation``).
        evaluate_source: unused (the source model is the result); kept for recipes that set it.
        reject_unknown: classification: predict "unknown" above this normalised entropy (universal DA).
    """

    evaluates_without_checkpoint = True

    def __init__(self, source: SourceModel, evaluate_source: bool = True,
                 reject_unknown: float | None = None):
        super().__init__(source, evaluate_source=evaluate_source, reject_unknown=reject_unknown)
        self.automatic_optimization = False  # nothing to optimise: a stream step returns no loss (DDP too)

    def adapt_step(self, batch: dict):
        if self.stream is None:
            raise RuntimeError(f"{type(self).__name__} does not train: run `sfda test --config <recipe>` "
                               "instead of `sfda fit`")
        self.network.eval()
        with torch.no_grad():
            return None, self(batch["image"])

    def configure_optimizers(self):
        return None
