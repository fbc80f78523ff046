"""GLC (Qu et al., CVPR 2023): source-free universal DA by global and local clustering."""

from __future__ import annotations

import torch

from ..losses import soft_cross_entropy
from ..models import SourceModel
from ..pseudo_labels import (
    GLC_COEFFICIENTS,
    KnnBackend,
    check_knn_backend,
    one_vs_all_pseudo_labels,
    select_num_clusters,
)
from ..tasks.neighbourhood import NeighbourhoodMethod
from ..tasks.optim import Optim


class GLC(NeighbourhoodMethod):
    """Per step ``L = lambda_psd * CE(q_n, p_n) + lambda_knn * CE(a_n, p_n)``.

    At every epoch start one engine pass over the target set refreshes the feature/score bank
    and the global pseudo-labels ``q`` (one-vs-all clustering with positive prototypes,
    k-means negative prototypes and the source-private prior rho; uniform targets for samples
    rejected by every class); the target cluster count is chosen once, at the first epoch, by
    silhouette over ``coefficients``, and kept in the checkpoint. ``a_n`` is the mean bank
    score of the K nearest bank features (local consensus); each step writes its batch back.
    At evaluation a prediction whose normalised entropy exceeds ``reject_unknown`` (w0) is
    "unknown".

    Deviation: the cluster count is chosen on the L2-normalised features, without the official
    code's t-SNE projection (``benchmarks/glc_global_step.py`` measures speed and agreement).

    Args:
        source, optim, evaluate_source: see ``Adaptation``.
        k: neighbours of the local consensus (4).
        rho: prior floor of source-private classes (0.75).
        lambda_psd: weight of the global pseudo-label CE (0.3 Office-31/VisDA, 1.5 Office-Home/DomainNet).
        lambda_knn: weight of the kNN consensus CE (1.0).
        reject_unknown: w0, normalised-entropy threshold of unknown predictions (0.55).
        coefficients: cluster-count coefficients (0.25, 0.5, 1, 2, 3).
        max_cluster_samples: cluster-count selection runs on a seeded subsample of this many points.
        max_points_per_centroid: negative k-means is fitted on at most this many points per centroid
            (faiss's default 256, which the official code runs with); None: every negative.
        knn_backend: bank kNN by "torch", "faiss" or "auto" (faiss where installed and measured faster).
    """

    refresh_bank_each_epoch = True

    def __init__(self, source: SourceModel, k: int = 4, rho: float = 0.75, lambda_psd: float = 0.3,
                 lambda_knn: float = 1.0, reject_unknown: float | None = 0.55,
                 coefficients: list[float] | None = None, max_cluster_samples: int = 10000,
                 max_points_per_centroid: int | None = 256, optim: Optim | None = None,
                 evaluate_source: bool = True, knn_backend: KnnBackend = "auto"):
        if not 0 <= rho <= 1:
            raise ValueError(f"model.rho: expected a prior floor in [0, 1], got {rho}")
        if max_points_per_centroid is not None and max_points_per_centroid < 1:
            raise ValueError("model.max_points_per_centroid: expected a positive count or null, got "
                             f"{max_points_per_centroid}")
        super().__init__(source, optim, freeze_head=True, evaluate_source=evaluate_source,
                         reject_unknown=reject_unknown)
        self.k, self.rho, self.lambda_psd, self.lambda_knn = k, rho, lambda_psd, lambda_knn
        self.coefficients = tuple(coefficients or GLC_COEFFICIENTS)
        self.max_cluster_samples, self.max_points_per_centroid = max_cluster_samples, max_points_per_centroid
        self.knn_backend = check_knn_backend(knn_backend)

    def build_state(self, num_samples: int) -> None:
        super().build_state(num_samples)
        self.register_buffer("targets", torch.zeros(num_samples, self.num_classes), persistent=True)
        self.register_buffer("cluster_coefficient", torch.tensor(0.0), persistent=True)  # 0 = not chosen yet

    def on_train_epoch_start(self) -> None:
        with self.stopwatch("engine"):
            rows = self.full_pass(self.trainer.datamodule.bank_dataloader(), "GLC global clustering")
            self.write_bank(rows)
            if float(self.cluster_coefficient) == 0:
                chosen, silhouettes = select_num_clusters(rows["features"], self.num_classes,
                                                          self.coefficients, self.max_cluster_samples)
                self.cluster_coefficient.fill_(chosen)
                self.results.update({"engine/glc_clusters": max(1, int(self.num_classes * chosen)),
                                     **{f"engine/silhouette@{coef:g}": s for coef, s in silhouettes.items()}})
            labels = one_vs_all_pseudo_labels(rows["features"], rows["probs"],
                                              float(self.cluster_coefficient), self.rho,
                                              max_points_per_centroid=self.max_points_per_centroid)
            self.targets[rows["index"]] = labels["targets"].to(self.targets.device)
        self.log("engine/known_fraction", labels["known"].float().mean())

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        probs, _, near = self.step_neighbours(batch)
        consensus = self.bank.scores[near].mean(dim=1)
        global_term = soft_cross_entropy(probs, self.targets[batch["index"]])
        local_term = soft_cross_entropy(probs, consensus)
        loss = self.lambda_psd * global_term + self.lambda_knn * local_term
        self.log_dict({"train/loss": loss, "train/global": global_term, "train/local": local_term},
                      prog_bar=True)
        return loss
