"""Evaluation whose scores need every sample at once (detection's AP, pose's PCK): each step keeps its
batch's per-sample rows, and the epoch's end gathers them over processes with the engine's
``collect_rows`` (the duplicates a padded sampler adds are dropped by index) and scores them once, so
the scores do not depend on the number of processes."""

from __future__ import annotations

import torch

from ..pseudo_labels.passes import Rows, collect_rows


class GatheredEvaluation:
    """Mixin of a task module (before the LightningModule base). Subclasses implement
    ``evaluation_rows(batch, network=None) -> Rows`` and ``score_rows(rows, prefix) -> {key: value}``
    and set ``eval_prefix``."""

    eval_prefix = "target"

    def evaluation_rows(self, batch: dict, network: torch.nn.Module | None = None) -> Rows:
        raise NotImplementedError

    def score_rows(self, rows: Rows, prefix: str) -> dict[str, float]:
        raise NotImplementedError

    def evaluate_loader(self, loader, prefix: str, network: torch.nn.Module | None = None
                        ) -> dict[str, float]:
        """The scores of ``network`` (default: the evaluated one) over a labelled loader, in one pass."""
        rows = self.target_pass(loader, lambda b: self.evaluation_rows(b, network), f"evaluating {prefix}",
                                phase="evaluation")
        return self.score_rows(rows, prefix)

    def _eval_step(self, batch: dict) -> None:
        if not hasattr(self, "eval_rows"):
            self.eval_rows: list[dict] = []  # this epoch's rows, gathered and scored at its end
        with self.stopwatch("evaluation"):
            self.eval_rows.append({"index": batch["index"], **self.evaluation_rows(batch)})

    def _eval_epoch_end(self) -> None:
        identity = lambda b: {k: v for k, v in b.items() if k != "index"}  # noqa: E731
        rows = collect_rows(iter(getattr(self, "eval_rows", [])), identity)
        self.eval_rows = []
        self.log_dict(self.score_rows(rows, self.eval_prefix), sync_dist=False)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end()

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end()


class ScoresSourceNetwork:
    """Mixin of the adaptation modules of a gathered-evaluation task (detection, pose): the untouched
    source network, built once from the artifact and kept out of checkpoints, and its source-only scores
    before the first step. ``build_source_network`` may add what the task needs (detection: frozen
    BatchNorm)."""

    def build_source_network(self) -> torch.nn.Module:
        return self.artifact.build_network()

    def source_network(self) -> torch.nn.Module:
        """The source network in eval mode on this device (in a list, not a submodule: never saved)."""
        if not getattr(self, "_source_cache", None):
            self._source_cache = [self.build_source_network().to(self.device).eval()]
        return self._source_cache[0]

    def evaluate_source_model(self) -> dict[str, float]:
        loader = self.trainer.datamodule.val_dataloader()
        scores = self.evaluate_loader(loader, "source_only", self.source_network())
        return {k: v for k, v in scores.items() if k.startswith("source_only/")}
