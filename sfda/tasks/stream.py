"""The module side of online test-time adaptation (``sfda.data.stream`` is the data side).

``OnlineStream`` is what an adaptation module holds when its data is a ``StreamDataModule``. At each step:
the batch's labels are taken out before the method sees it (they only score); at a new domain the model is
reset to the source (``reset_each_shift``) and the finished domain is scored; the method adapts on the
images and returns the predictions it made for them (``Adaptation.adapt_step``: predicted before or while
it adapts, as its paper does); the predictions are counted against the labels, per domain.

Counts are the task's sufficient statistics (classification: a confusion matrix per domain), summed over
processes at every step, kept in the module's buffers (``stream_counts``, ``stream_steps``,
``stream_domain``): a checkpoint holds them, so a resumed run goes on from the step it was saved at with the
same counts and scores exactly what an unbroken run scores. Results: ``online/<NN>_<domain>/<metric>``
per domain in stream order, ``online/<metric>`` their mean, one console line per domain.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


class OnlineStream:
    """The stream protocol of one run (see the module docstring).

    Args:
        module: the adaptation module (its task gives ``online_counts`` / ``online_scores``).
        datamodule: the ``StreamDataModule``.
    """

    def __init__(self, module: L.LightningModule, datamodule):
        self.names = datamodule.domain_names
        self.resets = datamodule.resets
        self.mixed = datamodule.setting == "mixed_domains"
        shape = module.task.online_count_shape()
        module.register_buffer("stream_counts", torch.zeros(len(self.names), *shape, dtype=torch.int64))
        module.register_buffer("stream_steps", torch.zeros((), dtype=torch.int64))
        module.register_buffer("stream_domain", torch.full((), -1, dtype=torch.int64))
        self.labels: torch.Tensor | None = None

    # each step --------------------------------------------------------------------------------------------
    def begin(self, module, batch: dict) -> None:
        """Before ``training_step``: take the labels out; at a new domain score the finished one and, when the
        setting resets, return the model to the source."""
        self.labels = batch.pop("label")
        if self.mixed:
            return
        domain = int(batch["domain"][0])
        previous = int(module.stream_domain)
        if domain != previous:
            if previous >= 0:
                self.finish(module, previous)
                if self.resets:
                    module.reset_to_source()
            module.stream_domain.fill_(domain)

    def count(self, module, outputs, batch: dict) -> None:
        """Count this step's predictions against its labels, per domain, summed over processes."""
        keep = batch["weight"] > 0
        domains = batch["domain"]
        steps = torch.zeros_like(module.stream_counts)
        for d in domains[keep].unique().tolist():
            rows = keep & (domains == d)
            steps[d] = module.task.online_counts(module, outputs, self.labels, rows)
        module.stream_counts += module.trainer.strategy.reduce(steps, reduce_op="sum").to(torch.int64)
        module.stream_steps += 1

    # scores -----------------------------------------------------------------------------------------------
    def finish(self, module, domain: int) -> dict[str, float]:
        """Score ``domain``: results ``online/<NN>_<name>/...`` and one console line (rank 0)."""
        scores = module.task.online_scores(module.stream_counts[domain])
        key = f"online/{domain:02d}_{self.names[domain]}"
        module.results.update({f"{key}/{name}": value for name, value in scores.items()})
        if module.trainer.is_global_zero:
            shown = "  ".join(f"{name} {value:.4f}" for name, value in scores.items() if name != "samples")
            print(f"online {domain + 1}/{len(self.names)} {self.names[domain]}: {shown} "
                  f"({int(scores['samples'])} samples)", flush=True)
        return scores

    def end(self, module) -> None:
        """At the stream's end: score the last domain (every domain when mixed) and the mean over domains,
        ``online/<metric>``."""
        if self.mixed:
            for domain in range(len(self.names)):
                self.finish(module, domain)
        elif int(module.stream_domain) >= 0:
            self.finish(module, int(module.stream_domain))
        per_domain = [module.task.online_scores(module.stream_counts[d]) for d in range(len(self.names))]
        seen = [scores for scores in per_domain if scores["samples"] > 0]
        for name in seen[0] if seen else ():
            if name != "samples":
                module.results[f"online/{name}"] = sum(s[name] for s in seen) / len(seen)
        module.results["online/domains"] = float(len(seen))
        if module.trainer.is_global_zero and seen:
            shown = "  ".join(f"{k[len('online/'):]} {v:.4f}" for k, v in module.results.items()
                              if k.startswith("online/") and k.count("/") == 1 and k != "online/domains")
            print(f"online, mean over {len(seen)} domains: {shown}", flush=True)

    @staticmethod
    def checkpoints(every: int) -> ModelCheckpoint:
        """Checkpoints every ``every`` stream steps (``last.ckpt`` links to the newest), so a stopped stream
        resumes from its last save, not from its start."""
        return StreamCheckpoint(every)


class StreamCheckpoint(ModelCheckpoint):
    """Saves after every ``every``-th STREAM step (the module's ``stream_steps``), not optimiser step: a
    method that takes no optimiser step (source, BN, LAME) or one every 64 samples (RoTTA) saves as often
    as Tent.
    Files are named ``epoch=0-stream_step=<n>.ckpt``; ``last.ckpt`` links to the newest."""

    def __init__(self, every: int):
        super().__init__(filename="{epoch}-{stream_step}", save_last="link")
        self.every = every
        self.saved_at = -1  # the stream step of the last save (Lightning's own test counts optimiser steps)

    @staticmethod
    def steps(trainer) -> int:
        return int(getattr(trainer.lightning_module, "stream_steps", 0))

    def _monitor_candidates(self, trainer) -> dict:
        candidates = super()._monitor_candidates(trainer)
        candidates["stream_step"] = torch.tensor(self.steps(trainer))
        return candidates

    def _should_skip_saving_checkpoint(self, trainer) -> bool:
        return (bool(trainer.fast_dev_run) or trainer.state.fn != "fit" or trainer.sanity_checking
                or self.saved_at == self.steps(trainer))

    def _save_topk_checkpoint(self, trainer, candidates) -> None:
        super()._save_topk_checkpoint(trainer, candidates)
        self.saved_at = self.steps(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._should_skip_saving_checkpoint(trainer) or self.steps(trainer) % self.every:
            return
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)


def snapshot(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``network``'s state (the source weights a reset returns to)."""
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def restore(network: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load the ``snapshot`` entries that ``network`` still has (Tent drops running statistics) strictly."""
    own = network.state_dict()
    network.load_state_dict({k: state[k].to(own[k].device) for k in own}, strict=True)
