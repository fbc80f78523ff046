"""Base LightningModules: shared classification evaluation, optimiser, and the adaptation base."""

from __future__ import annotations

import copy
import os
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch

from ..callbacks import PredictionCSV
from ..data.contract import check_target_data
from ..metrics import ClassificationScores, LabelFreeScores, confusion, scores_from_confusion
from ..metrics.validators import marginal_entropy
from ..models import ArtifactError, FeatureClassifier, SourceArtifact, SourceModel, load_source
from ..models.batchnorm_folding import folded_copy
from ..models.keyed_dropout import sample_keys
from ..pseudo_labels import unknown_by_entropy
from ..report.evidence import classification_evidence, gallery_images, gallery_picks, kept_rows, write_npz
from ..run_checks import check_state_shapes
from .optim import Optim, build_optimizer, check_finite  # noqa: F401 (Optim, build_optimizer: re-exported)
from .task import TaskModule


def drop_training_state(module: L.LightningModule, checkpoint: dict) -> None:
    """Outside ``fit`` remove per-sample training state (banks, pseudo-labels, priors) from a
    checkpoint, since it is only built for training; ``network.*`` weights still load strictly."""
    trainer = module._trainer
    if trainer is not None and trainer.state.fn != "fit":
        own = module.state_dict()
        for key in [k for k in checkpoint["state_dict"] if k not in own and not k.startswith("network.")]:
            del checkpoint["state_dict"][key]


class ClassifierTask(TaskModule):
    """Evaluation shared by source training and adaptation.

    Validation and test log ``<eval_prefix>/acc``, ``<eval_prefix>/acc_per_class`` (where the
    evaluation split has labels; with unknown target samples also ``known_acc``, ``unknown_acc``
    and ``h_score``, see ``sfda.metrics.accuracy``) and the label-free validators
    ``label_free/<name>`` (``sfda.metrics.validators``: entropy, im, snd, bnm, class_ami; with
    ``data.eval_strong_view`` view_agreement; for a method with an EMA teacher teacher_agreement).
    Predictions are ``predict_labels``: the argmax, or ``num_classes`` ("unknown") for samples the
    method rejects.
    """

    eval_prefix = "target"
    network: FeatureClassifier

    def build_metrics(self, num_classes: int) -> None:
        self.num_classes = num_classes
        for stage in ("val", "test"):
            setattr(self, f"{stage}_scores", ClassificationScores(num_classes))
            setattr(self, f"{stage}_label_free", LabelFreeScores())

    def evaluation_teacher(self) -> torch.nn.Module | None:
        """The method's EMA teacher network (``images -> (features, logits)``) for the label-free
        ``teacher_agreement``; None where the method has none."""
        return None

    def unknown_threshold(self) -> float | None:
        """Normalised-entropy threshold above which a sample is predicted unknown; None: never."""
        return None

    def predict_labels(self, probs: torch.Tensor) -> torch.Tensor:
        """``(N, C) -> (N,)`` class ids, ``C`` for samples rejected as unknown."""
        predictions = probs.argmax(dim=1)
        threshold = self.unknown_threshold()
        if threshold is not None:
            predictions = torch.where(unknown_by_entropy(probs, threshold),
                                      torch.full_like(predictions, probs.shape[1]), predictions)
        return predictions

    def forward(self, images: torch.Tensor,
                index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, H, W) -> (features (B, D), logits (B, K))``. Training steps pass the batch's
        global sample ``index (B,)``: dropout masks then depend on (run seed, global step, index)
        only, so the trajectory does not depend on how many processes share the global batch.
        Eval-mode forwards between ``start_folded_inference`` and ``stop_folded_inference`` run on the
        folded copy."""
        keys = None
        if index is not None and self.training and self.network.uses_dropout:
            keys = sample_keys(index, int(os.environ.get("PL_GLOBAL_SEED", 0)), self.global_step)
        folded = self.__dict__.get("_folded")
        if folded is not None and not self.network.training:
            return folded(images, keys)
        return self.network(images, keys)

    # eval-mode passes on a copy with BatchNorm folded into the convolutions --------------
    def start_folded_inference(self) -> None:
        """Until ``stop_folded_inference``, eval-mode forwards run on a copy of the network as it is
        now, with BatchNorm folded into the convolutions (``sfda.models.batchnorm_folding``: the same
        outputs up to float rounding, faster). Only where the run asked for it (``fold_batchnorm``, set
        by the ``FoldBatchNorm`` callback). The copy is kept outside the module's state: it is never
        trained, saved or loaded."""
        folded = folded_copy(self.network) if getattr(self, "fold_batchnorm", False) else None
        self.__dict__["_folded"] = folded  # a plain attribute, not a registered submodule

    def stop_folded_inference(self) -> None:
        self.__dict__["_folded"] = None

    @contextmanager
    def folded_inference(self):
        """``start_folded_inference`` for the block (a fresh copy of the weights as they are now);
        the copy in use before, if any, afterwards."""
        previous = self.__dict__.get("_folded")
        self.start_folded_inference()
        try:
            yield
        finally:
            self.__dict__["_folded"] = previous

    def configure_callbacks(self) -> list:
        """The task's writers: ``predictions.csv`` for ``sfda predict``."""
        return [PredictionCSV()]

    # evaluation ---------------------------------------------------------------------------
    def _eval_step(self, batch: dict, stage: str) -> None:
        features, logits = self(batch["image"])
        probs = logits.float().softmax(dim=1)
        strong = self(batch["strong"])[1].float().softmax(dim=1) if "strong" in batch else None
        teacher = self.evaluation_teacher()
        teacher_probs = None if teacher is None else teacher(batch["image"])[1].float().softmax(dim=1)
        scores = getattr(self, f"{stage}_label_free")
        scores.update(probs, batch.get("index"), features=features, strong=strong, teacher=teacher_probs)
        getattr(self, f"{stage}_scores").update(self.predict_labels(probs), batch["label"])

    def _eval_epoch_end(self, stage: str) -> None:
        for name in ("label_free", "scores"):
            metric = getattr(self, f"{stage}_{name}")
            values = metric.compute()  # gathered over processes
            metric.reset()
            prefix = "label_free" if name == "label_free" else self.eval_prefix
            self.log_dict({f"{prefix}/{k}": v for k, v in values.items()}, sync_dist=False)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        _, logits = self(batch["image"])
        probs = logits.float().softmax(dim=1)
        return {"index": batch["index"], "prediction": self.predict_labels(probs),
                "confidence": probs.max(dim=1).values}

    # optimisation -------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict]:
        """Backbone at ``backbone_lr_mult x lr``, bottleneck and head at ``lr``; subclasses choose which
        parameters train."""
        groups = self.network.parameter_groups()
        o = self.optim
        return [{"params": [p for p in groups["backbone"] if p.requires_grad],
                 "lr": o.lr * o.backbone_lr_mult},
                {"params": [p for p in groups["bottleneck"] + groups["head"] if p.requires_grad], "lr": o.lr}]


class SourceAdaptation:
    """What every adaptation module does whatever the task (a mixin before the LightningModule
    base): check the source artifact against the target data, build per-sample state before a
    checkpoint restore, score the source model before the first step, and keep ``results`` in
    checkpoints. Subclasses set ``artifact``, ``evaluate_source``, ``results`` and
    ``source_only_key`` and implement ``evaluate_source_model``."""

    source_only_key = "source_only/acc"
    # where the source model's class-marginal entropy is kept (None: the task has no class marginal, and
    # the collapse guard, sfda.callbacks.CollapseGuard, says it does not apply)
    source_marginal_key: str | None = None

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            return
        check_target_data(datamodule)
        check_against_data(self.artifact, datamodule)
        if stage == "fit":
            self.build_state(datamodule.num_samples("train"))

    def build_state(self, num_samples: int) -> None:
        """Create per-sample state (banks, pseudo-labels, priors) sized to the target set; before checkpoint
        restore."""

    def evaluate_source_model(self) -> dict[str, float]:
        """Scores of the untouched source model on the evaluation split, keys ``source_only/...``."""
        raise NotImplementedError

    def on_train_start(self) -> None:
        if self.evaluate_source and self.source_only_key not in self.results and self.current_epoch == 0:
            self.results.update(self.evaluate_source_model())

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


class AdaptationModule(SourceAdaptation, ClassifierTask):
    """Base of every source-free adaptation method.

    Loads the source artifact, checks it against the target data (class count, input spec),
    freezes the classifier head (hypothesis transfer), measures source-only accuracy before
    the first step, and offers ``full_pass`` over the target set for the engine.

    Args:
        source: path of a source artifact (``sfda fit`` of a source recipe writes one), ``{path,
            architecture}`` for an artifact of a model class from outside sfda that you trust, or an
            ``ExternalModel`` description of a model trained elsewhere.
        optim: optimiser and schedule.
        freeze_head: keep the final classifier fixed (SHOT, NRC, AaD: true).
        evaluate_source: measure source-only accuracy on the evaluation split at fit start.
        reject_unknown: predict "unknown" (class id ``num_classes``) when the normalised entropy
            of a prediction exceeds this (GLC's w0 = 0.55); None: closed set, never reject.
    """

    source_marginal_key = "source_only/marginal_entropy"

    def __init__(self, source: SourceModel, optim: Optim | None = None, freeze_head: bool = True,
                 evaluate_source: bool = True, reject_unknown: float | None = None):
        super().__init__(optim)
        if reject_unknown is not None and not 0 < reject_unknown < 1:
            raise ValueError("model.reject_unknown: expected a normalised-entropy threshold in (0, 1), got "
                             f"{reject_unknown}")
        self.reject_unknown = reject_unknown
        self.artifact: SourceArtifact = load_source(source)
        self.network = self.artifact.build()
        self.source_feature_dim = dry_forward(self.network, self.artifact)
        self.freeze_head = freeze_head
        self.evaluate_source = evaluate_source
        if freeze_head:
            self.network.head.requires_grad_(False)
        self.build_metrics(self.artifact.num_classes)

    def evaluation_teacher(self) -> torch.nn.Module | None:
        """The method's EMA teacher network (``images -> (features, logits)``) for the label-free
        ``teacher_agreement``; None where the method has none."""
        return None

    def unknown_threshold(self) -> float | None:
        return self.reject_unknown

    def feature_dim(self) -> int:
        """D of the network's ``(B, D)`` features (measured by the dry forward at load)."""
        return self.source_feature_dim

    def evaluate_source_model(self) -> dict[str, float]:
        """The accuracy family of the source model and the entropy of its class marginal
        (``source_only/marginal_entropy``, what the collapse guard compares with)."""
        loader = self.trainer.datamodule.val_dataloader()
        rows = self.full_pass(loader, "evaluating source_only", phase="evaluation")
        self.source_rows = kept_rows(rows)  # the "before" of the report's evidence
        scores = self.split_scores(rows, "source_only")
        if len(rows["probs"]):
            scores[self.source_marginal_key] = float(marginal_entropy(rows["probs"]))
        return scores

    def report_evidence(self, folder: Path | None) -> None:
        """``classification.npz`` for ``sfda report`` (see ``sfda.report.evidence``): one more pass over the
        evaluation split with the adapted network, compared with the source-only pass."""
        loader = self.trainer.datamodule.val_dataloader()
        rows = self.full_pass(loader, "report evidence", phase="evaluation")
        if folder is None:
            return
        before = getattr(self, "source_rows", None)
        evidence = classification_evidence(before, kept_rows(rows), self.predict_labels,
                                           self.unknown_threshold(), self.artifact.class_names)
        evidence.update(gallery_images(loader.dataset, gallery_picks(evidence), self.artifact.input))
        write_npz(folder, "classification.npz", evidence)

    # the engine's target pass ----------------------------------------------------------------
    def classification_rows(self, batch: dict) -> dict[str, torch.Tensor]:
        """Per-sample rows of a classification pass: ``features (B, D)``, ``probs (B, C)``,
        ``labels (B,)``."""
        features, logits = self(batch["image"])
        probs = logits.float().softmax(dim=1)
        return {"features": features.float(), "probs": probs, "labels": batch["label"]}

    def full_pass(self, loader, description: str = "engine pass",
                  phase: str = "engine") -> dict[str, torch.Tensor]:
        """The classification target pass: ``{"index": (N,), "features": (N, D), "probs": (N, C),
        "labels": (N,)}`` on this device, identical on every rank, in global index order."""
        with self.folded_inference():
            return self.target_pass(loader, self.classification_rows, description, phase)

    def split_scores(self, rows: dict[str, torch.Tensor], prefix: str) -> dict[str, float]:
        """The accuracy family (see ClassifierTask) of a labelled pass's rows."""
        scores = scores_from_confusion(confusion(self.predict_labels(rows["probs"]), rows["labels"],
                                                 self.num_classes))
        return {f"{prefix}/{k}": float(v) for k, v in scores.items()}


def dry_forward(network: FeatureClassifier, artifact: SourceArtifact) -> int:
    """One eval-mode forward of a zero batch shaped by the artifact's input spec, on a copy of the
    network (BatchNorm statistics untouched): refuses a spec the network cannot take. Returns the
    feature width D."""
    spec = artifact.input
    probe = copy.deepcopy(network).eval()
    try:
        with torch.no_grad():
            features, logits = probe(torch.zeros(2, spec.channels, spec.size, spec.size))
    except RuntimeError as err:
        raise ArtifactError(f"model.source.input: the network does not take input.channels = "
                            f"{spec.channels}, input.size = {spec.size} ({str(err).splitlines()[0]}); "
                            "give the channels and size the model was trained with") from err
    if logits.shape[1] != artifact.num_classes:
        raise ArtifactError(f"model.source.class_names: {artifact.num_classes} names but the network has "
                            f"{logits.shape[1]} outputs")
    return int(features.shape[1])


def check_against_data(artifact: SourceArtifact, datamodule) -> None:
    """Refuse a source model whose class count or input spec differs from the recipe's data; a
    datamodule that can (image folders) takes the model's class order."""
    if hasattr(datamodule, "adopt_class_names"):
        datamodule.adopt_class_names(artifact.class_names)
    names = getattr(datamodule, "class_names", None)
    permuted = sorted(map(str, names or [])) == sorted(artifact.class_names)
    if names and list(names) != artifact.class_names and permuted:
        raise ArtifactError(f"data.class_names {list(names)} hold the source model's classes in another "
                            f"order than its outputs {artifact.class_names}; labels and predictions would be "
                            "permuted. Give them in the model's order, or drop data.class_names to adopt it")
    if names and len(names) != artifact.num_classes:
        raise ArtifactError(
            f"class count mismatch: the source model has {artifact.num_classes} classes "
            f"{artifact.class_names} but data ({type(datamodule).__name__}) has {len(names)} classes "
            f"{names}; use a source model trained on the target's class set")
    spec = getattr(datamodule, "input_spec", None)
    if spec is None:
        datamodule.input_spec = artifact.input
    elif type(artifact.input).from_dict(spec.to_dict()) != artifact.input:
        raise ArtifactError(f"data.input {spec} differs from the source model's input spec {artifact.input}; "
                            "remove data.input to adopt the model's preprocessing")

