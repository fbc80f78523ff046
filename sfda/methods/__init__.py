"""LightningModules: source training and the adaptation methods (one file each)."""

from .aad import AaD
from .active import ActiveAdaptation
from .base import AdaptationModule, ClassifierTask, Optim
from .detection import DetectionSourceTraining, DetectionTask
from .detection_adaptation import DetectionAdaptation, DetectionSourceOnly, MeanTeacherDetection
from .entropy_prior import EntropyPrior
from .glc import GLC
from .lftl import LFTL
from .lpld import LPLD
from .nrc import NRC
from .pose import PoseSourceTraining, PoseTask
from .pose_adaptation import MeanTeacherPose, PoseAdaBN, PoseAdaptation, PoseSourceOnly
from .pose_sfda import PoseSFDA
from .segmentation import SegmentationSourceTraining, SegmentationTask
from .segmentation_adaptation import AdaBN, SegmentationAdaptation, SegmentationSourceOnly, SegmentationTent
from .shot import SHOT
from .source_only import SourceOnly
from .source_training import SourceTraining
from .tent import Tent

__all__ = [
    "PoseSourceTraining",
    "PoseTask",
    "PoseAdaptation",
    "PoseSourceOnly",
    "PoseAdaBN",
    "MeanTeacherPose",
    "PoseSFDA",
    "DetectionSourceTraining",
    "DetectionTask",
    "DetectionAdaptation",
    "DetectionSourceOnly",
    "MeanTeacherDetection",
    "LPLD",
    "ActiveAdaptation",
    "LFTL",
    "AdaBN",
    "EntropyPrior",
    "SegmentationAdaptation",
    "SegmentationSourceOnly",
    "SegmentationSourceTraining",
    "SegmentationTask",
    "SegmentationTent",
    "AaD",
    "AdaptationModule",
    "ClassifierTask",
    "Optim",
    "GLC",
    "NRC",
    "SHOT",
    "SourceOnly",
    "SourceTraining",
    "Tent",
]
