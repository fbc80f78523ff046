"""Source-free active adaptation: labelling budget per round, query strategies, annotators."""

from .annotators import Annotator, AwaitingLabels, FileAnnotator, LabelsFileError, StoredLabels
from .budget import Budget
from .query import (
           QUERY_STRATEGIES,
           contrastive_scores,
           entropy_scores,
           margin,
           margin_scores,
           query_lowest,
           random_scores,
)

__all__ = ["Annotator", "AwaitingLabels", "FileAnnotator", "LabelsFileError", "StoredLabels", "Budget",
           "QUERY_STRATEGIES", "contrastive_scores", "entropy_scores", "margin", "margin_scores",
           "query_lowest", "random_scores"]
