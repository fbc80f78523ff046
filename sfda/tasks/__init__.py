"""The task layer: one module per task (classification, segmentation, detection, pose), each holding
what the task owns (evaluation, predictions and writers, per-sample rows, network parts, source
training), the one contract they implement (``base.Task``), and the LightningModule bases that hold a
task: ``module.TaskModule`` (every method), ``adaptation.Adaptation`` (every adaptation method) and
``source_training.SourceTrainingModule``."""

from .adaptation import EVERY_TASK, TASKS, Adaptation
from .base import Task
from .classification import ClassificationTask, SourceTraining
from .detection import DetectionSourceTraining, DetectionTask
from .module import TaskModule
from .pose import PoseSourceTraining, PoseTask
from .segmentation import SegmentationSourceTraining, SegmentationTask
from .source_training import SourceTrainingModule

__all__ = [
    "EVERY_TASK", "TASKS", "Adaptation", "ClassificationTask", "DetectionSourceTraining", "DetectionTask",
    "PoseSourceTraining", "PoseTask", "SegmentationSourceTraining", "SegmentationTask", "SourceTraining",
    "SourceTrainingModule", "Task", "TaskModule",
]
