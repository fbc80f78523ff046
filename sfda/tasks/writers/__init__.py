"""The tasks' prediction writers (``sfda predict``), returned from each task's ``writers``."""

from .classes import PredictionCSV
from .detections import DetectionWriter
from .keypoints import PoseWriter
from .masks import MaskWriter

__all__ = ["DetectionWriter", "MaskWriter", "PoseWriter", "PredictionCSV"]
