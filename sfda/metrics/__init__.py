"""torchmetrics Metrics: accuracy family and label-free model-selection scores."""

from .accuracy import ClassificationScores, confusion, scores_from_confusion
from .label_free import LabelFreeScores
from .segmentation import VolumeScores, volume_scores
from .validators import soft_neighbourhood_density

__all__ = ["ClassificationScores", "confusion", "scores_from_confusion", "LabelFreeScores",
           "soft_neighbourhood_density", "VolumeScores", "volume_scores"]
