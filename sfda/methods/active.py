"""Source-free ACTIVE adaptation: labelling rounds inside one Lightning fit.

Round r (1-based) spans epochs ``(r-1) E .. r E - 1`` (``E = epochs_per_round``). When the
first epoch of a round asks for its training data, the method scores the still-unlabelled
pool with the current model, queries the budget's share of lowest scores, and asks the
annotator for their labels; the epoch then trains on the pool and on every labelled sample.
The model carries over between rounds; each round gets a fresh optimiser and schedule.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Literal

import torch

from ..active import (
    Annotator,
    Budget,
    StoredLabels,
    contrastive_scores,
    entropy_scores,
    margin_scores,
    query_lowest,
    random_scores,
)
from ..models import SourceModel
from ..pseudo_labels import TargetBank, check_identical_across_ranks
from ..tasks.adaptation import Adaptation
from ..tasks.optim import Optim, build_optimizer

Query = Literal["contrastive", "random", "entropy", "margin"]


class ActiveAdaptation(Adaptation):
    """Rounds, queries, annotation and per-round records; subclasses write the training step.

    Buffers (checkpointed, keyed by global sample index): ``query_round (N,)`` (round that
    queried the sample, -1 = still in the pool), ``given_labels (N,)`` (annotator's label, -1),
    and the bank ``previous`` ``(N, C)``: the probabilities of the previous round's query pass.
    ``results`` gain ``round_<r>/{labelled,target/acc,target/acc_per_class,seconds,query_s}``;
    the run directory gains ``rounds/round_<r>.csv`` (index, label) for every round.

    Args:
        source, optim, evaluate_source: see ``Adaptation``. The classifier head trains (freeze_head false).
        budget: total and per-round labelling ratios (see ``Budget``).
        epochs_per_round: training epochs of each round (trainer.max_epochs must be rounds x this).
        query: 'contrastive' (LFTL), 'random', 'entropy' or 'margin'.
        annotator: who labels queried samples (default ``StoredLabels``, for benchmarks with labels).
        alpha, kappa, balance: Contrastive Active Sampling's alpha, kappa and lambda.
        labelled_batch_size: global batch of labelled samples per step (capped by the labelled count).
    """

    tasks = ("classification",)

    def __init__(self, source: SourceModel, budget: Budget | None = None, epochs_per_round: int = 10,
                 query: Query = "contrastive", annotator: Annotator | None = None, alpha: float = 0.03,
                 kappa: int = 100, balance: float = 0.1, labelled_batch_size: int = 64,
                 optim: Optim | None = None, evaluate_source: bool = True):
        super().__init__(source, optim, freeze_head=False, evaluate_source=evaluate_source)
        if epochs_per_round < 1:
            raise ValueError(f"model.epochs_per_round: expected >= 1, got {epochs_per_round}")
        self.budget, self.epochs_per_round, self.query = budget or Budget(), epochs_per_round, query
        self.annotator = annotator or StoredLabels()
        self.alpha, self.kappa, self.balance = alpha, kappa, balance
        self.labelled_batch_size = labelled_batch_size
        self.round_sizes: list[int] = []
        self._round_steps = 1
        self._round_started = 0.0

    # state ------------------------------------------------------------------------------------
    def build_state(self, num_samples: int) -> None:
        self.round_sizes = self.budget.per_round(num_samples)
        self.register_buffer("query_round", torch.full((num_samples,), -1, dtype=torch.long))
        self.register_buffer("given_labels", torch.full((num_samples,), -1, dtype=torch.long))
        self.previous = TargetBank(num_samples, {"probs": self.num_classes})

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != "fit":
            return
        expected = len(self.round_sizes) * self.epochs_per_round
        if self.trainer.max_epochs != expected:
            raise ValueError(f"trainer.max_epochs: expected {expected} ({len(self.round_sizes)} rounds of "
                             f"the budget x model.epochs_per_round {self.epochs_per_round}), got "
                             f"{self.trainer.max_epochs}")
        # the labelled set and the pool change every round, so the epoch's data is rebuilt every epoch
        self.trainer.reload_dataloaders_every_n_epochs = 1

    def round_of(self, epoch: int) -> int:
        return epoch // self.epochs_per_round + 1

    def labelled(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Global indices ``(L,)`` and labels ``(L,)`` of every sample labelled so far."""
        index = (self.given_labels >= 0).nonzero().flatten()
        return index, self.given_labels[index]

    # the epoch's data ---------------------------------------------------------------------------
    def training_epoch(self, datamodule):
        """Called by the datamodule at every epoch start (before ``on_train_epoch_start``):
        queries at a round's first epoch, then builds the epoch over the pool and the labelled set."""
        epoch, round_index = self.current_epoch, self.round_of(self.current_epoch)
        if epoch % self.epochs_per_round == 0 and not bool((self.query_round == round_index).any()):
            self._round_started = time.perf_counter()
            self.run_query(round_index, datamodule)
        index, labels = self.labelled()
        pool = (self.query_round < 0).nonzero().flatten()
        world = self.trainer.world_size
        if len(index) < world:
            raise ValueError(f"only {len(index)} labelled samples for {world} processes; raise "
                             "model.budget.round_ratio")
        labelled_batch = min(self.labelled_batch_size, len(index)) // world * world
        data = datamodule.active_epoch(pool.cpu().numpy(), index.cpu().numpy(), labels.cpu().numpy(),
                                       labelled_batch, self.uses_mixup(), epoch)
        self._round_steps = self.epochs_per_round * len(data)
        return data

    def uses_mixup(self) -> bool:
        """Whether the epoch ends with mixup steps over the labelled set."""
        return False

    # querying ---------------------------------------------------------------------------------
    def query_scores(self, probs: torch.Tensor, previous: torch.Tensor, round_index: int) -> torch.Tensor:
        """``(P,)`` scores of the pool's rows (lowest queried first)."""
        if self.query == "contrastive":
            return contrastive_scores(probs, previous, self.alpha, self.kappa, self.balance)
        if self.query == "entropy":
            return entropy_scores(probs)
        if self.query == "margin":
            return margin_scores(probs)
        return random_scores(len(probs), int(os.environ.get("PL_GLOBAL_SEED", 0)),
                             round_index).to(probs.device)

    @torch.no_grad()
    def run_query(self, round_index: int, datamodule) -> None:
        """Score the pool, query this round's share, record the annotator's labels (all ranks alike)."""
        started = time.perf_counter()
        rows = self.full_pass(datamodule.bank_dataloader(), f"round {round_index}: scoring the pool",
                              phase="query")
        in_pool = self.query_round[rows["index"]] < 0
        probs = rows["probs"][in_pool]
        previous = self.previous.read("probs", rows["index"][in_pool]) if self.previous.is_full() else probs
        scores = self.query_scores(probs, previous.to(probs.device), round_index)
        chosen = rows["index"][in_pool][query_lowest(scores, self.round_sizes[round_index - 1])]
        labels = self.annotator.annotate(round_index, chosen.cpu().numpy(), datamodule,
                                         Path(self.trainer.default_root_dir), self.trainer.is_global_zero,
                                         self._resume_from())
        labels = torch.as_tensor(labels, dtype=torch.long, device=self.given_labels.device)
        check_identical_across_ranks(torch.cat([chosen.to(labels.device), labels]),
                                     f"round {round_index}: queried samples and labels")
        self.query_round[chosen] = round_index
        self.given_labels[chosen] = labels
        self.previous.write(rows["index"], synchronise=False, probs=rows["probs"])
        self.on_labelled(chosen, rows)
        self.results[f"round_{round_index}/query_s"] = time.perf_counter() - started
        self.results[f"round_{round_index}/labelled"] = float((self.given_labels >= 0).sum())
        self._write_round_record(round_index, chosen, labels)

    def _resume_from(self) -> str:
        """The checkpoint holding everything up to this round: this run's last.ckpt, else the one it resumed
        from."""
        callback = self.trainer.checkpoint_callback
        last = Path(callback.dirpath) / "last.ckpt" if callback is not None and callback.dirpath else None
        if last is not None and last.exists():
            return str(last)
        return str(self.trainer.ckpt_path or "")

    def on_labelled(self, chosen: torch.Tensor, rows: dict[str, torch.Tensor]) -> None:
        """Hook after a query: ``chosen (n,)`` newly labelled indices, ``rows`` the full pass (by index)."""

    def _write_round_record(self, round_index: int, chosen: torch.Tensor, labels: torch.Tensor) -> None:
        log_dir = self.trainer.log_dir  # a collective under DDP: every rank reads it
        if not self.trainer.is_global_zero or not log_dir:
            return
        folder = Path(log_dir) / "rounds"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"round_{round_index:02d}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["index", "label"])
            writer.writerows(zip(chosen.tolist(), labels.tolist(), strict=True))

    # rounds -----------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        if self.current_epoch % self.epochs_per_round == 0 and self.current_epoch > 0:
            self.trainer.strategy.setup_optimizers(self.trainer)  # a fresh optimiser and schedule per round
        self.log_dict({"round": float(self.round_of(self.current_epoch)),
                       "round/labelled": float((self.given_labels >= 0).sum())})

    def on_train_epoch_end(self) -> None:
        if (self.current_epoch + 1) % self.epochs_per_round:
            return
        round_index = self.round_of(self.current_epoch)
        for key in ("target/acc", "target/acc_per_class"):
            if key in self.trainer.callback_metrics:
                self.results[f"round_{round_index}/{key}"] = float(self.trainer.callback_metrics[key])
        if self._round_started:
            self.results[f"round_{round_index}/seconds"] = time.perf_counter() - self._round_started

    def configure_optimizers(self):
        return build_optimizer(self, self.parameter_groups(), self.optim,
                               total_steps=lambda: self._round_steps)
