"""The base of every source-free adaptation method, whatever the task.

``Adaptation`` loads the source artifact, chooses the task from the artifact's ``task`` (a method
declares the tasks it works on in ``tasks`` and refuses the others by name), builds the network the
method adapts, checks the artifact against the target data, creates per-sample state before a checkpoint
restore, scores the source model before the first step (``source_only/...``), and keeps ``results`` in
checkpoints.
"""

from __future__ import annotations

import lightning as L
import torch

from ..data.contract import check_target_data
from ..data.stream import StreamDataModule
from ..models import ArtifactError, SourceModel, load_source
from ..models.keyed_dropout import dropout_off
from ..pseudo_labels.passes import Rows
from ..pseudo_labels.teacher import momentum_for_share
from ..run.checks import check_state_shapes
from .base import Task
from .classification import ClassificationTask
from .detection import DetectionTask
from .module import TaskModule
from .optim import Optim
from .pose import PoseTask
from .segmentation import SegmentationTask
from .stream import OnlineStream, restore, snapshot

TASKS: dict[str, type[Task]] = {task.name: task for task in (ClassificationTask, SegmentationTask,
                                                              DetectionTask, PoseTask)}
EVERY_TASK = tuple(TASKS)


def drop_training_state(module: L.LightningModule, checkpoint: dict) -> None:
    """Outside ``fit`` remove per-sample training state (banks, pseudo-labels, priors) from a
    checkpoint, since it is only built for training; ``network.*`` weights still load strictly."""
    trainer = module._trainer
    if trainer is not None and trainer.state.fn != "fit":
        own = module.state_dict()
        for key in [k for k in checkpoint["state_dict"] if k not in own and not k.startswith("network.")]:
            del checkpoint["state_dict"][key]


class Adaptation(TaskModule):
    """Base of every source-free adaptation method.

    Args:
        source: path of a source artifact (``sfda fit`` of a source recipe writes one), ``{path,
            architecture}`` for an artifact of a model class from outside sfda that you trust, or an
            ``ExternalModel`` description of a model trained elsewhere.
        optim: optimiser and schedule (default: the task's).
        evaluate_source: score the source model on the evaluation split at fit start (``source_only/...``).
        freeze_head: keep the classifier head fixed (classification; SHOT, NRC, AaD: true).
        reject_unknown: classification: predict "unknown" (class id ``num_classes``) when the normalised
            entropy of a prediction exceeds this (GLC's w0 = 0.55); None: closed set, never reject.
    """

    tasks: tuple[str, ...] = EVERY_TASK

    def __init__(self, source: SourceModel, optim: Optim | None = None, evaluate_source: bool = True,
                 freeze_head: bool = False, reject_unknown: float | None = None):
        super().__init__(optim)
        self.artifact = load_source(source)
        self.task = self.task_for(self.artifact.task, source)
        if reject_unknown is not None and not (self.task.name == "classification" and 0 < reject_unknown < 1):
            raise ValueError("model.reject_unknown: expected a normalised-entropy threshold in (0, 1) for a "
                             f"classification model, got {reject_unknown} for a {self.task.name} model")
        self.reject_unknown = reject_unknown
        self.evaluate_source = evaluate_source
        self.freeze_head = freeze_head
        self.network = self.task.build_network(self.artifact)
        if freeze_head:
            self.task.freeze_head(self.network)
        self.stream: OnlineStream | None = None  # set when the data is a stream (online test-time adaptation)

    def task_for(self, name: str, source) -> Task:
        """The task of an artifact, if this method works on it; refused by name otherwise."""
        if name not in self.tasks or name not in TASKS:
            works_on = ", ".join(self.tasks)
            raise ArtifactError(f"model.source: {self.artifact.origin or source} is a '{name}' artifact; "
                                f"{type(self).__name__} adapts {works_on} models only")
        return TASKS[name](self.artifact.class_names, self.artifact.input)

    @property
    def source_only_key(self) -> str:
        """The source model's headline score in ``results``."""
        return f"source_only/{self.task.headline}"

    @property
    def source_marginal_key(self) -> str | None:
        """Where the source model's class-marginal entropy is kept (None: the task has no class marginal,
        and the collapse guard says it does not apply)."""
        return "source_only/marginal_entropy" if self.task.class_marginal else None

    def unknown_threshold(self) -> float | None:
        """Normalised-entropy threshold above which a sample is predicted unknown; None: never."""
        return self.reject_unknown

    # data and state -------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            return
        if isinstance(datamodule, StreamDataModule):
            self.task.check_data(datamodule, self.artifact)
            if stage == "fit" and self.stream is None:
                self.start_stream(datamodule)
            return
        check_target_data(datamodule)
        self.task.check_data(datamodule, self.artifact)
        if stage == "fit":
            self.build_state(datamodule.num_samples("train"))

    # online test-time adaptation (``sfda.tasks.stream``) ---------------------------------------------------
    def adapt_step(self, batch: dict):
        """One step of the method on a batch WITHOUT labels: ``(loss or None, outputs)``, ``outputs`` the
        predictions it makes for these images in the task's training-time form (classification
        ``(features, logits)``), made before or while it adapts, as its paper does. A method that defines it
        runs online on a stream (and offline over epochs, where its ``training_step`` is this one)."""
        raise NotImplementedError

    @classmethod
    def runs_online(cls) -> bool:
        return cls.adapt_step is not Adaptation.adapt_step

    def start_stream(self, datamodule: StreamDataModule) -> None:
        """Refuse what cannot run on a stream, then hold the protocol's state (``OnlineStream``) and the
        source weights a reset returns to."""
        if not self.runs_online():
            raise ValueError(f"model: {type(self).__name__} adapts offline over epochs of a stored target "
                             "set and has no online step; on a stream (data: StreamDataModule) use an "
                             "online method (see docs/methods/online.md)")
        if self.normalises_with_the_batch() and datamodule.batch_size < 2:
            raise ValueError(f"data.batch_size: {type(self).__name__} normalises each batch with its own "
                             "statistics, which one image cannot give; expected at least 2, got "
                             f"{datamodule.batch_size}")
        if self.trainer.max_epochs != 1:
            raise ValueError("trainer.max_epochs: an online run passes over its stream once; expected 1, "
                             f"got {self.trainer.max_epochs}")
        self.stream = OnlineStream(self, datamodule)
        self.__dict__["_source_state"] = snapshot(self.network)

    def configure_optimizers(self):
        """The method's optimiser; on a stream its learning rate must be constant (every online method's
        paper keeps it so, and a reset at a shift could not return a decayed schedule to its start)."""
        if self.stream is not None:
            o = self.optim
            for field, decays in (("power", o.power > 0 and o.gamma > 0), ("step_epochs", o.step_epochs > 0),
                                  ("milestones", bool(o.milestones))):
                if decays:
                    raise ValueError(f"model.optim.{field}: an online run keeps its learning rate constant; "
                                     f"expected {'()' if field == 'milestones' else 0}, got "
                                     f"{getattr(o, field)}")
        return super().configure_optimizers()

    def reset_to_source(self) -> None:
        """Return to the source model (``reset_each_shift``): the network's source weights, the method's own
        state (``reset_method_state``) and fresh optimiser statistics."""
        restore(self.network, self.__dict__["_source_state"])
        self.reset_method_state()
        for optimizer in self.trainer.optimizers:
            optimizer.state.clear()

    def normalises_with_the_batch(self) -> bool:
        """Whether the method's predictions use the batch's own BatchNorm statistics (then a batch of one
        image is refused on a stream); False by default."""
        return False

    def reset_method_state(self) -> None:
        """Return the method's own state (teachers, memories, anchors) to its start; none by default."""

    def training_step(self, batch: dict, batch_idx: int):
        """``adapt_step``; on a stream its predictions are counted against the labels taken out before."""
        loss, outputs = self.adapt_step(batch)
        if self.stream is not None:
            self.stream.count(self, outputs, batch)
        return loss

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        if self.stream is not None:
            self.stream.begin(self, batch)

    def on_train_epoch_end(self) -> None:
        if self.stream is not None:
            self.stream.end(self)

    def configure_callbacks(self) -> list:
        own = super().configure_callbacks()
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if isinstance(datamodule, StreamDataModule):
            own.append(OnlineStream.checkpoints(datamodule.checkpoint_every))
        return own

    def build_state(self, num_samples: int) -> None:
        """Create per-sample state (banks, pseudo-labels, priors) sized to the target set; before checkpoint
        restore."""

    def source_network(self) -> torch.nn.Module:
        """The untouched source network in eval mode on this device (in a list, not a submodule: never
        saved)."""
        if not getattr(self, "_source_cache", None):
            self._source_cache = [self.task.build_source_network(self.artifact).to(self.device).eval()]
        return self._source_cache[0]

    def full_pass(self, loader, description: str = "engine pass", phase: str = "engine") -> Rows:
        """The task's per-sample rows of the current network over ``loader`` (``Task.sample_rows``;
        classification: ``features (N, D)``, ``probs (N, C)``, ``labels (N,)``), identical on every
        process, in global index order."""
        with self.folded_inference():
            return self.target_pass(loader, lambda b: self.task.sample_rows(self, b), description, phase)

    # the source model's scores ---------------------------------------------------------------------------
    def evaluate_source_model(self) -> dict[str, float]:
        """The headline family of the source model (the network before its first step) on the evaluation
        split, ``source_only/...``, and where the task has one the entropy of its predicted class marginal
        (``source_only/marginal_entropy``, what the collapse guard compares with). The rows are kept as
        ``source_rows`` (the "before" of the report's evidence)."""
        loader = self.trainer.datamodule.val_dataloader()
        scores, rows = self.evaluate_loader(loader, "source_only", self.network, label_free=False)
        self.source_rows = self.task.kept_report_rows(rows)
        kept = {k: v for k, v in scores.items() if k.startswith("source_only/")}
        if "label_free/marginal_entropy" in scores:
            kept["source_only/marginal_entropy"] = scores["label_free/marginal_entropy"]
        return kept

    def on_train_start(self) -> None:
        if self.stream is not None:  # a stream scores as it goes; the source model is the Source method's run
            dropout_off(self.network)  # a stream's predictions are the adapted model's, not dropout's noise
            return
        if self.evaluate_source and self.source_only_key not in self.results and self.current_epoch == 0:
            self.results.update(self.evaluate_source_model())

    # EMA time constants ---------------------------------------------------------------------------------
    def ema_updates(self, every: str, epochs: int | None = None) -> int:
        """EMA updates over the run's first ``epochs`` epochs (default: all of them), one per step or one per
        epoch."""
        epochs = self.trainer.max_epochs if epochs is None else epochs
        if epochs is None or epochs < 1:
            raise ValueError("trainer.max_epochs: an EMA time constant given as a share of the source "
                             "weights counts the run's updates from its epochs; expected a positive count, "
                             f"got {epochs}")
        return epochs * int(self.trainer.num_training_batches) if every == "step" else epochs

    def momentum_from_share(self, share: float, every: str, field: str) -> float:
        """The EMA momentum with which the follower keeps ``share`` of the source weights at the run's end
        (``momentum_for_share`` over this run's updates), recorded in ``results`` (``ema/momentum``)."""
        momentum = momentum_for_share(share, self.ema_updates(every), field)
        self.results["ema/momentum"] = momentum
        return momentum

    def log_ema_share(self, momentum: float, every: str) -> None:
        """Log ``train/ema_source_share``: the share of the source weights the follower still holds at the
        end of this epoch (``momentum ** updates``)."""
        self.log("train/ema_source_share", momentum ** self.ema_updates(every, self.current_epoch + 1))

    def report_evidence(self, folder) -> None:
        """What ``sfda report`` draws (see ``Task.report_evidence``); a stream's run has no evaluation split
        to draw from (its scores are the online ones in ``results.json``)."""
        if self.stream is None:
            self.task.report_evidence(self, folder)

    # checkpoints ------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["sfda_results"] = dict(self.results)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """In ``fit`` restore the results measured so far (a resumed run continues them); outside ``fit``
        drop the per-sample training state (see ``drop_training_state``) and keep nothing the checkpoint
        claims: ``sfda test`` reports only what it measures. Refuse tensors whose shapes differ from this
        recipe's (another target set or class count) before Lightning's strict load does, by name."""
        if self.trainer.state.fn == "fit":
            self.results.update(checkpoint.get("sfda_results", {}))
        drop_training_state(self, checkpoint)
        check_state_shapes(self, checkpoint, self.trainer.ckpt_path)
