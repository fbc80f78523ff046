"""The adaptation methods, one file each. A method holds its task (``sfda.tasks``); the methods that make
sense for every task (``SourceOnly``, ``AdaBN``, ``Tent``, ``MeanTeacher``) exist once. Source training
lives with its task (``sfda.tasks.<task>``) and is exported here for recipes.

A new method is one file here and ONE line below (``from .<file> import <Class> as <Class>``, the explicit
re-export form): ``METHODS`` and ``__all__`` are built from what this module imports (see the guide "Add a
method"). Older class names that recipes use stay as aliases of the one class.
"""

from ..tasks.adaptation import Adaptation as Adaptation
from ..tasks.classification import SourceTraining as SourceTraining
from ..tasks.detection import DetectionSourceTraining as DetectionSourceTraining
from ..tasks.optim import Optim as Optim
from ..tasks.pose import PoseSourceTraining as PoseSourceTraining
from ..tasks.segmentation import SegmentationSourceTraining as SegmentationSourceTraining
from .aad import AaD as AaD
from .active import ActiveAdaptation as ActiveAdaptation
from .adabn import AdaBN as AdaBN
from .bnm import BNM as BNM
from .cotta import CoTTA as CoTTA
from .deyo import DeYO as DeYO
from .eata import EATA as EATA
from .eata import ETA as ETA
from .entropy_prior import EntropyPrior as EntropyPrior
from .glc import GLC as GLC
from .lame import LAME as LAME
from .lftl import LFTL as LFTL
from .lpld import LPLD as LPLD
from .mean_teacher import MeanTeacher as MeanTeacher
from .memo import MEMO as MEMO
from .nrc import NRC as NRC
from .pose_sfda import PoseSFDA as PoseSFDA
from .rotta import RoTTA as RoTTA
from .sar import SAR as SAR
from .shot import SHOT as SHOT
from .source_only import SourceOnly as SourceOnly
from .tent import Tent as Tent
from .test_time_norm import TestTimeNorm as TestTimeNorm

# names of earlier releases, kept for recipes: each is the one generic class
SegmentationSourceOnly = DetectionSourceOnly = PoseSourceOnly = SourceOnly
PoseAdaBN = AdaBN
SegmentationTent = Tent
MeanTeacherDetection = MeanTeacherPose = MeanTeacher
AdaptationModule = Adaptation

# every adaptation method defined in this package, once (aliases and bases left out)
OWN = f"{__name__}."  # classes defined in this package's modules
METHODS: tuple[type, ...] = tuple(dict.fromkeys(
    value for value in list(globals().values())
    if isinstance(value, type) and issubclass(value, Adaptation) and value.__module__.startswith(OWN)))
SOURCE_TRAINING = (SourceTraining, SegmentationSourceTraining, DetectionSourceTraining, PoseSourceTraining)
__all__ = sorted(name for name, value in list(globals().items())
                 if isinstance(value, type) and not name.startswith("_")) + ["METHODS", "SOURCE_TRAINING"]
