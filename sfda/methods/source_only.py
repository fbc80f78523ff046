"""Source-only: the source model evaluated on the target as it is (the reference every method must beat)."""

from __future__ import annotations

from .base import AdaptationModule


class ScoresTheSourceModel:
    """Mixin (before a task's adaptation base) of the source-only modules of every task: the source model
    is the result (``sfda test`` / ``validate`` / ``predict`` need no checkpoint) and ``sfda fit`` is
    refused."""

    evaluates_without_checkpoint = True

    def training_step(self, batch, batch_idx):
        raise RuntimeError(f"{type(self).__name__} does not train: run `sfda test --config <recipe>` instead "
                           "of `sfda fit`")

    def configure_optimizers(self):
        return None


class SourceOnly(ScoresTheSourceModel, AdaptationModule):
    """No adaptation. Use with ``sfda test`` / ``sfda validate``; ``sfda fit`` is refused."""
