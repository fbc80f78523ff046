"""LightningModules: source training and the adaptation methods (one file each)."""

from .aad import AaD
from .base import AdaptationModule, ClassifierTask, Optim
from .glc import GLC
from .nrc import NRC
from .shot import SHOT
from .source_only import SourceOnly
from .source_training import SourceTraining
from .tent import Tent

__all__ = ["AaD", "AdaptationModule", "ClassifierTask", "Optim", "GLC", "NRC", "SHOT", "SourceOnly", "SourceTraining", "Tent"]
