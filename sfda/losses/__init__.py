"""Documented loss functions shared by the methods. Shapes: B batch, C classes, K neighbours."""

from .active import anchor_entropy, mixup_batch
from .information import (
    information_maximization,
    masked_information_maximization,
    mean_entropy,
    soft_cross_entropy,
)
from .neighbourhood import attract_disperse, weighted_neighbour_affinity
from .segmentation import class_ratio_kl, predicted_class_ratio, weighted_entropy

__all__ = ["anchor_entropy", "mixup_batch", "information_maximization", "masked_information_maximization",
           "mean_entropy", "soft_cross_entropy", "attract_disperse", "weighted_neighbour_affinity",
           "class_ratio_kl", "predicted_class_ratio", "weighted_entropy"]
