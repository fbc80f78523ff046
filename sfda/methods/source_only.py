"""Source-only: the source model evaluated on the target as it is, for every task (the reference every
method must beat)."""

from __future__ import annotations

from ..models import SourceModel
from ..tasks.adaptation import Adaptation


class SourceOnly(Adaptation):
    """No adaptation: ``sfda test`` / ``sfda validate`` / ``sfda predict`` score the source model and need no
    checkpoint; ``sfda fit`` is refused. Works on every task.

    Args:
        source: the source artifact (see ``Adaptation``).
        evaluate_source: unused (the source model is the result); kept for recipes that set it.
        reject_unknown: classification: predict "unknown" above this normalised entropy (universal DA).
    """

    evaluates_without_checkpoint = True

    def __init__(self, source: SourceModel, evaluate_source: bool = True,
                 reject_unknown: float | None = None):
        super().__init__(source, evaluate_source=evaluate_source, reject_unknown=reject_unknown)

    def training_step(self, batch, batch_idx):
        raise RuntimeError(f"{type(self).__name__} does not train: run `sfda test --config <recipe>` instead "
                           "of `sfda fit`")

    def configure_optimizers(self):
        return None
