"""torchmetrics Metrics: accuracy family and label-free model-selection scores."""

from .label_free import LabelFreeScores, soft_neighbourhood_density

__all__ = ["LabelFreeScores", "soft_neighbourhood_density"]
