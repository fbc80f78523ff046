"""The base of the tasks' source training: train on labelled source data, keep the weights of the best
source-validation epoch, and write them as the source artifact that adaptation starts from (where it is
written, and what is never overwritten: ``sfda.tasks.artifact_output``)."""

from __future__ import annotations

import torch

from ..models import ArtifactError, SourceArtifact
from ..models.artifact import load_artifact
from ..models.weights import load_matching
from ..run.checkpoint_choice import BestSoFar
from .artifact_output import check_destinations, source_input_spec, write_artifact
from .base import Task
from .module import TaskModule
from .optim import Optim

__all__ = ["SourceTrainingModule", "source_input_spec"]


class SourceTrainingModule(TaskModule):
    """Subclasses set ``task_class`` and build ``network``, ``task`` and ``architecture`` in
    ``configure_model`` (once the data's classes and input spec are known), write ``training_step``, and
    set ``best_metric`` (higher is better; none: the last epoch's weights are written).

    Args:
        artifact: where to copy the artifact after a complete run (it is always written to
            ``<run dir>/source.pt``); see ``sfda.tasks.artifact_output``.
        overwrite_artifact: allow replacing an existing file at ``artifact``.
        optim: the optimiser (default: the task's).
        start_from: a source artifact to fine-tune instead of starting from the builder's weights (an
            oracle: the source model trained further on labelled target data). Its architecture, names and
            input spec must be the ones this recipe builds; refused by field otherwise.
    """

    eval_prefix = "source_val"
    best_metric: str = ""
    task_class: type[Task]  # the task this source training trains for

    def configure_callbacks(self) -> list:
        """The task's prediction writers (the task itself is built later, with the data's names)."""
        return self.task_class.writers(self)

    def __init__(self, artifact: str | None = None, overwrite_artifact: bool = False,
                 optim: Optim | None = None, start_from: str | None = None):
        super().__init__(optim)
        self.artifact_path, self.overwrite_artifact = artifact, overwrite_artifact
        self.start_from = start_from
        self.network = None
        self.kept = BestSoFar("max")  # the best epoch's score and CPU weights, kept in checkpoints

    def setup(self, stage: str) -> None:
        if stage == "fit":
            check_destinations(self.trainer, self.artifact_path, self.overwrite_artifact)

    def on_fit_start(self) -> None:
        """``start_from``: load the artifact's weights into the network just built (not on a resume: the
        checkpoint holds the run's own weights)."""
        if self.start_from is not None and self.trainer.ckpt_path is None:
            self.load_start_weights(self.start_from)

    def load_start_weights(self, location: str) -> None:
        """The weights of the artifact at ``location``, strictly, after checking that it is the model this
        recipe builds (architecture, output names, input spec)."""
        start = load_artifact(location)
        own = self.source_artifact(self.network)
        for field, theirs, ours in (("architecture", start.architecture, own.architecture),
                                    ("class_names", start.class_names, own.class_names),
                                    ("input", start.input.to_dict(), own.input.to_dict())):
            if theirs != ours:
                raise ArtifactError(f"model.start_from: {location}: field '{field}' is {theirs}, but this "
                                    f"recipe builds {ours}; fine-tune only the model the recipe describes")
        load_matching(self.network, start.state_dict, f"model.start_from: {location}")

    # the best epoch -----------------------------------------------------------------------------------------
    def kept_network(self) -> torch.nn.Module:
        """The network whose best weights are kept and written (default ``network``)."""
        return self.network

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self.remember_if_best(self.kept_network())

    def remember_if_best(self, network: torch.nn.Module) -> None:
        """After a validation epoch: keep a CPU copy of ``network``'s weights if ``best_metric`` improved."""
        value = self.trainer.callback_metrics.get(self.best_metric)
        if value is None or self.trainer.sanity_checking or not self.kept.better(float(value)):
            return
        weights = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
        self.kept.best = {"score": float(value), "epoch": self.current_epoch, "state_dict": weights}

    def restore_best(self, network: torch.nn.Module) -> float:
        """Load the best weights into ``network``; returns their score."""
        if self.kept.best is None:
            raise RuntimeError(f"source training ended without a validation score ({self.best_metric}); set "
                               "trainer.check_val_every_n_epoch <= max_epochs")
        network.load_state_dict(self.kept.best["state_dict"])
        return self.kept.best["score"]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["sfda_best"] = self.kept.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A resumed run keeps the best epoch before the stop (its score and weights)."""
        super().on_load_checkpoint(checkpoint)
        self.kept.load_state_dict(checkpoint.get("sfda_best", {}))

    # the artifact ------------------------------------------------------------------------------------------
    def source_artifact(self, network: torch.nn.Module) -> SourceArtifact:
        """The artifact of ``network`` (its best weights restored): the task's architecture, names, input."""
        state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
        return SourceArtifact(architecture=self.architecture, state_dict=state,
                              class_names=list(self.task.names), input=self.trainer.datamodule.input_spec,
                              task=self.task.name)

    def on_train_end(self) -> None:
        self.write_source_artifact()

    def write_source_artifact(self) -> None:
        """Write the artifact (rank 0): from the best source-validation weights where ``best_metric`` is set
        (``results["<prefix>/best_<metric>"]`` says their score), else from the last epoch's. Runs in
        ``on_train_end``, before ``on_fit_end`` where results.json is written."""
        network = self.kept_network()
        best = self.restore_best(network) if self.best_metric else None
        self.results.update(write_artifact(self.trainer, self.source_artifact(network), self.artifact_path,
                                           self.overwrite_artifact))
        if best is not None:
            prefix, _, metric = self.best_metric.partition("/")
            self.results[f"{prefix}/best_{metric}"] = best
