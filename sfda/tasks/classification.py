"""Classification: the task (evaluation, predictions, per-sample rows, network parts) and its source
training.

The network is a ``FeatureClassifier``: ``images (B, C, H, W) -> (features (B, D), logits (B, K))`` with
``backbone``, ``bottleneck`` and ``head`` parts. Labels are ``0..K-1``; ``K`` is "unknown" (a
target-private class, universal DA) and ``-1`` "no label".
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from ..losses import mean_entropy
from ..metrics import confusion, scores_from_confusion
from ..metrics.validators import label_free_figures, marginal_entropy
from ..models import ArtifactError, FeatureClassifier, SourceArtifact, SourceClassifier, artifact_from_module
from ..models.deployable import ClassifierLogits
from ..models.keyed_dropout import sample_keys
from ..pseudo_labels import unknown_by_entropy
from ..pseudo_labels.passes import Rows
from .base import Task, evaluating
from .evidence import classification_evidence, gallery_images, gallery_picks, kept_rows, write_npz
from .module import TaskModule
from .optim import Optim
from .source_training import SourceTrainingModule, source_input_spec
from .writers import PredictionCSV


class ClassificationTask(Task):
    """Evaluation logs ``<prefix>/acc``, ``<prefix>/acc_per_class`` (where the evaluation split has labels;
    with unknown target samples also ``known_acc``, ``unknown_acc`` and ``h_score``, see
    ``sfda.metrics.accuracy``) and the label-free validators ``label_free/<name>``
    (``sfda.metrics.validators``: entropy, im, snd, bnm, class_ami; with ``data.eval_strong_view``
    view_agreement; for a method with an EMA teacher teacher_agreement). Predictions are
    ``predict_labels``: the argmax, or ``num_classes`` ("unknown") for samples the method rejects, written
    to ``predictions.csv``."""

    name = "classification"
    headline = "acc"
    class_marginal = True
    folds_batchnorm = True

    def build_network(self, artifact: SourceArtifact) -> FeatureClassifier:
        network = artifact.build()
        self.feature_dim = dry_forward(network, artifact)
        return network

    def forward(self, module: TaskModule, images: torch.Tensor,
                index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, H, W) -> (features (B, D), logits (B, K))``. Training steps pass the batch's global
        sample ``index (B,)``: dropout masks then depend on (run seed, global step, index) only, so the
        trajectory does not depend on how many processes share the global batch. Eval-mode forwards
        between ``start_folded_inference`` and ``stop_folded_inference`` run on the folded copy."""
        network = module.network
        keys = None
        if index is not None and module.training and network.uses_dropout:
            keys = sample_keys(index, int(os.environ.get("PL_GLOBAL_SEED", 0)), module.global_step)
        folded = module.folded_network()
        if folded is not None and not network.training:
            return folded(images, keys)
        return network(images, keys)

    def outputs(self, module: TaskModule, network: torch.nn.Module, images: torch.Tensor):
        """``(features, logits)`` of ``network`` in eval mode (the module's own network: folded where the
        run folds)."""
        if network is module.network:
            with evaluating(network):
                return module(images)
        with evaluating(network):
            return network(images)

    def parameter_groups(self, network: FeatureClassifier, optim: Optim) -> list[dict]:
        """Backbone at ``backbone_lr_mult x lr``, bottleneck and head at ``lr``; frozen parameters out."""
        groups = network.parameter_groups()
        backbone = [p for p in groups["backbone"] if p.requires_grad]
        rest = [p for p in groups["bottleneck"] + groups["head"] if p.requires_grad]
        return [{"params": backbone, "lr": optim.lr * optim.backbone_lr_mult},
                {"params": rest, "lr": optim.lr}]

    def freeze_head(self, network: FeatureClassifier) -> None:
        network.head.requires_grad_(False)

    def mean_entropy(self, outputs) -> torch.Tensor:
        _, logits = outputs
        return mean_entropy(logits.float().softmax(dim=1))

    # online test-time adaptation ---------------------------------------------------------------------------
    def online_count_shape(self) -> tuple[int, int]:
        """A confusion matrix ``(K, K)``: rows true class, columns predicted class."""
        return (self.num_classes, self.num_classes)

    def online_counts(self, module: TaskModule, outputs, labels: torch.Tensor, rows: torch.Tensor
                      ) -> torch.Tensor:
        _, logits = outputs
        k = self.num_classes
        pairs = labels[rows].to(logits.device) * k + logits.detach()[rows].argmax(dim=1)
        return torch.bincount(pairs, minlength=k * k).view(k, k)

    def online_scores(self, counts: torch.Tensor) -> dict[str, float]:
        """``error`` (the field's online error), ``acc`` and ``samples``."""
        samples = float(counts.sum())
        if not samples:
            return {"samples": 0.0}
        acc = float(counts.diagonal().sum()) / samples
        return {"error": 1.0 - acc, "acc": acc, "samples": samples}

    # predictions ------------------------------------------------------------------------------------------
    @staticmethod
    def predict_labels(module: TaskModule, probs: torch.Tensor) -> torch.Tensor:
        """``(N, C) -> (N,)`` class ids, ``C`` for samples the method rejects as unknown."""
        predictions = probs.argmax(dim=1)
        threshold = module.unknown_threshold() if hasattr(module, "unknown_threshold") else None
        if threshold is not None:
            predictions = torch.where(unknown_by_entropy(probs, threshold),
                                      torch.full_like(predictions, probs.shape[1]), predictions)
        return predictions

    def predict(self, module: TaskModule, batch: dict, network: torch.nn.Module) -> dict:
        _, logits = self.outputs(module, network, batch["image"])
        probs = logits.float().softmax(dim=1)
        return {"index": batch["index"], "prediction": self.predict_labels(module, probs),
                "confidence": probs.max(dim=1).values}

    @classmethod
    def writers(cls, module: TaskModule) -> list:
        return [PredictionCSV()]

    # deployment -------------------------------------------------------------------------------------------
    def deployable(self, network: FeatureClassifier) -> torch.nn.Module:
        """``images (B, C, S, S) -> logits (B, K)``."""
        return ClassifierLogits(network)

    def deployment_spec(self, module: TaskModule) -> dict:
        """The base spec; a method that rejects unknown samples adds its entropy threshold."""
        spec = super().deployment_spec(module)
        threshold = module.unknown_threshold() if hasattr(module, "unknown_threshold") else None
        if threshold is not None:
            spec["unknown"] = {"entropy_threshold": float(threshold),
                               "rule": "a sample whose softmax entropy (natural log) exceeds "
                                       "entropy_threshold is 'unknown' (a class the source model lacks)"}
        return spec

    # evaluation -------------------------------------------------------------------------------------------
    def evaluation_rows(self, module: TaskModule, batch: dict, network: torch.nn.Module) -> Rows:
        """``features (B, D)``, ``probs (B, C)``, ``labels (B,)`` and, where the batch has a strong view,
        ``strong (B, C)``; where the method pairs an EMA network, ``teacher (B, C)``."""
        features, logits = self.outputs(module, network, batch["image"])
        rows = {"features": features.float(), "probs": logits.float().softmax(dim=1),
                "labels": batch["label"]}
        if "strong" in batch:
            rows["strong"] = self.outputs(module, network, batch["strong"])[1].float().softmax(dim=1)
        paired = module.paired_network()
        if paired is not None:
            rows["teacher"] = self.outputs(module, paired, batch["image"])[1].float().softmax(dim=1)
        return rows

    def sample_rows(self, module: TaskModule, batch: dict) -> Rows:
        features, logits = module(batch["image"])
        return {"features": features.float(), "probs": logits.float().softmax(dim=1),
                "labels": batch["label"]}

    def score_rows(self, module: TaskModule, rows: Rows, prefix: str, label_free: bool = True
                   ) -> dict[str, float]:
        probs = rows["probs"]
        if not len(probs):
            return {}
        matrix = confusion(self.predict_labels(module, probs), rows["labels"], self.num_classes)
        out = {f"{prefix}/{k}": float(v) for k, v in scores_from_confusion(matrix).items()}
        if label_free:
            given = {k: rows[k] for k in ("probs", "features", "strong", "teacher") if k in rows}
            out.update({f"label_free/{k}": float(v) for k, v in label_free_figures(given).items()})
        else:
            out["label_free/marginal_entropy"] = float(marginal_entropy(probs))
        return out

    def kept_report_rows(self, rows: Rows) -> dict:
        return kept_rows(rows)

    def report_evidence(self, module: TaskModule, folder: Path | None) -> None:
        """``classification.npz`` for ``sfda report`` (see ``sfda.tasks.evidence``): the adapted network's
        rows over the evaluation split, compared with the source-only pass. They are the last validation's
        where it scored the whole split with this very network (``unchanged_evaluation``), else one more
        pass."""
        loader = module.trainer.datamodule.val_dataloader()
        after = module.unchanged_evaluation()
        if after is None or len(after["index"]) != len(loader.dataset):
            after = kept_rows(module.full_pass(loader, "report evidence", phase="evaluation"))
        if folder is None:
            return
        before = getattr(module, "source_rows", None)
        evidence = classification_evidence(before, after,
                                           lambda probs: self.predict_labels(module, probs),
                                           module.unknown_threshold(), self.names)
        evidence.update(gallery_images(loader.dataset, gallery_picks(evidence), self.input))
        write_npz(folder, "classification.npz", evidence)


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


class SourceTraining(SourceTrainingModule):
    """Train f -> g -> h with label-smoothed cross-entropy on labelled source data.

    The source datamodule (``role: source``) holds out 10% of its training set; the weights
    with the best accuracy on that split are written as the source artifact at the end of
    fit (target data is never used).

    Args:
        backbone: 'lenet', 'mlp', a torchvision ResNet name (random init) or 'efficientnet_lite0/1/2'.
        pretrained: start an EfficientNet-Lite backbone from its ImageNet weights (3-channel input with
            mean 0.5 and std 0.5; ``sfda.models.efficientnet_lite``).
        bottleneck_dim: width of the bottleneck g (SHOT: 256).
        label_smoothing: epsilon of the smoothed cross-entropy (SHOT: 0.1).
        artifact: where to copy the artifact after a complete run (it is always written to
            ``<run dir>/source.pt``); see ``sfda.tasks.artifact_output``.
        overwrite_artifact: allow replacing an existing file at ``artifact``.
        optim: optimiser (SHOT digits: SGD lr 0.01, all layers at the same lr).
    """

    tasks = ("classification",)
    task_class = ClassificationTask
    best_metric = "source_val/acc"

    def __init__(self, backbone: str = "lenet", bottleneck_dim: int = 256, label_smoothing: float = 0.1,
                 artifact: str | None = None, overwrite_artifact: bool = False, optim: Optim | None = None,
                 pretrained: bool = False):
        super().__init__(artifact, overwrite_artifact,
                         optim or Optim(backbone_lr_mult=1.0, weight_decay=5e-4))
        self.backbone_name, self.bottleneck_dim, self.pretrained = backbone, bottleneck_dim, pretrained
        self.label_smoothing = label_smoothing

    def configure_model(self) -> None:
        """Build the network once the datamodule's class count and input spec are known."""
        if self.network is not None:
            return
        dm = self.trainer.datamodule
        spec = source_input_spec(dm, "size, channels, mean, std")
        self.architecture = {"target": "sfda.models.classifier:SourceClassifier",
                             "kwargs": {"backbone": self.backbone_name, "num_classes": dm.num_classes,
                                        "in_channels": spec.channels, "input_size": spec.size,
                                        "bottleneck_dim": self.bottleneck_dim}}
        net = SourceClassifier(**self.architecture["kwargs"], pretrained=self.pretrained)  # artifact: weights
        self.network = FeatureClassifier(net, "bottleneck", "head", ("bottleneck",))
        self.task = ClassificationTask(dm.class_names, spec)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        _, logits = self(batch["image"], batch["index"])
        loss = F.cross_entropy(logits.float(), batch["label"], label_smoothing=self.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def kept_network(self):
        return self.network.network  # the classifier inside the FeatureClassifier wrapper

    def source_artifact(self, network: torch.nn.Module) -> SourceArtifact:
        dm = self.trainer.datamodule
        return artifact_from_module(network, dm.class_names, dm.input_spec, self.architecture)
