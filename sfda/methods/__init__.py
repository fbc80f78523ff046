"""The adaptation methods, one file each. A method holds its task (``sfda.tasks``); the methods that make
sense for every task (``SourceOnly``, ``AdaBN``, ``Tent``, ``MeanTeacher``) exist once. Source training
lives with its task (``sfda.tasks.<task>``) and is exported here for recipes.

Older class names that recipes use stay as aliases of the one class.
"""

from ..tasks.adaptation import Adaptation
from ..tasks.classification import SourceTraining
from ..tasks.detection import DetectionSourceTraining
from ..tasks.optim import Optim
from ..tasks.pose import PoseSourceTraining
from ..tasks.segmentation import SegmentationSourceTraining
from .aad import AaD
from .active import ActiveAdaptation
from .adabn import AdaBN
from .entropy_prior import EntropyPrior
from .glc import GLC
from .lftl import LFTL
from .lpld import LPLD
from .mean_teacher import MeanTeacher
from .nrc import NRC
from .pose_sfda import PoseSFDA
from .shot import SHOT
from .source_only import SourceOnly
from .tent import Tent

# names of earlier releases, kept for recipes: each is the one generic class
SegmentationSourceOnly = DetectionSourceOnly = PoseSourceOnly = SourceOnly
PoseAdaBN = AdaBN
SegmentationTent = Tent
MeanTeacherDetection = MeanTeacherPose = MeanTeacher
AdaptationModule = Adaptation

METHODS = (SourceOnly, AdaBN, Tent, MeanTeacher, SHOT, NRC, AaD, GLC, ActiveAdaptation, LFTL, EntropyPrior,
           LPLD, PoseSFDA)
SOURCE_TRAINING = (SourceTraining, SegmentationSourceTraining, DetectionSourceTraining, PoseSourceTraining)

__all__ = [
    "AaD", "ActiveAdaptation", "AdaBN", "Adaptation", "AdaptationModule", "DetectionSourceOnly",
    "DetectionSourceTraining", "EntropyPrior", "GLC", "LFTL", "LPLD", "METHODS", "MeanTeacher",
    "MeanTeacherDetection", "MeanTeacherPose", "NRC", "Optim", "PoseAdaBN", "PoseSFDA", "PoseSourceOnly",
    "PoseSourceTraining", "SHOT", "SOURCE_TRAINING", "SegmentationSourceOnly", "SegmentationSourceTraining",
    "SegmentationTent", "SourceOnly", "SourceTraining", "Tent",
]
