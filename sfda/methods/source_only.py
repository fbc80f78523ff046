"""Source-only: the source model evaluated on the target as it is (the reference every method must beat)."""

from __future__ import annotations

from .base import AdaptationModule


class SourceOnly(AdaptationModule):
    """No adaptation. Use with ``sfda test`` / ``sfda validate``; ``sfda fit`` is refused."""

    evaluates_without_checkpoint = True  # the source model is the result

    def training_step(self, batch, batch_idx):
        raise RuntimeError("SourceOnly does not train: run `sfda test --config <recipe>` instead of `sfda fit`")

    def configure_optimizers(self):
        return None
