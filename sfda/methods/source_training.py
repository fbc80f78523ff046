"""Source training for classification: writes the source artifact adaptation starts from."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models import FeatureClassifier, SourceClassifier, artifact_from_module
from .artifact_output import KeepsBestWeights, WritesSourceArtifact, source_input_spec
from .base import ClassifierTask, Optim


class SourceTraining(KeepsBestWeights, WritesSourceArtifact, ClassifierTask):
    """Train f -> g -> h with label-smoothed cross-entropy on labelled source data.

    The source datamodule (``role: source``) holds out 10% of its training set; the weights
    with the best accuracy on that split are written as the source artifact at the end of
    fit (target data is never used).

    Args:
        backbone: 'lenet', 'mlp' or a torchvision ResNet name.
        bottleneck_dim: width of the bottleneck g (SHOT: 256).
        label_smoothing: epsilon of the smoothed cross-entropy (SHOT: 0.1).
        artifact: where to copy the artifact after a complete run (it is always written to
            ``<run dir>/source.pt``); see ``sfda.methods.artifact_output``.
        overwrite_artifact: allow replacing an existing file at ``artifact``.
        optim: optimiser (SHOT digits: SGD lr 0.01, all layers at the same lr).
    """

    eval_prefix = "source_val"
    best_metric = "source_val/acc"

    def __init__(self, backbone: str = "lenet", bottleneck_dim: int = 256, label_smoothing: float = 0.1,
                 artifact: str | None = None, overwrite_artifact: bool = False, optim: Optim | None = None):
        super().__init__(optim or Optim(backbone_lr_mult=1.0, weight_decay=5e-4))
        self.backbone_name, self.bottleneck_dim = backbone, bottleneck_dim
        self.label_smoothing, self.artifact_path = label_smoothing, artifact
        self.overwrite_artifact = overwrite_artifact
        self.network: FeatureClassifier | None = None

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
        net = SourceClassifier(**self.architecture["kwargs"])
        self.network = FeatureClassifier(net, "bottleneck", "head", ("bottleneck",))
        self.build_metrics(dm.num_classes)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        _, logits = self(batch["image"], batch["index"])
        loss = F.cross_entropy(logits.float(), batch["label"], label_smoothing=self.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def kept_network(self):
        return self.network.network  # the classifier inside the FeatureClassifier wrapper

    def on_train_end(self) -> None:
        """Write the artifact from the best source-validation weights (rank 0). Runs before
        ``on_fit_end``, where results.json is written, so the best score lands in it."""
        best = self.restore_best(self.network.network)
        dm = self.trainer.datamodule
        network = self.network.network
        artifact = artifact_from_module(network, dm.class_names, dm.input_spec, self.architecture)
        self.write_source_artifact(artifact)
        self.results["source_val/best_acc"] = best
