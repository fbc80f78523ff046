"""Datamodules, datasets, offline fetchers and augmentation views."""

from . import benchmarks  # registers the demo:// data sets with fetch
from .class_split import ClassSplit, ClassSplitError
from .datamodules import DigitsDataModule, ImageClassificationDataModule
from .detection import DetectionDataModule
from .folder import ImageFolderDataModule
from .pose import PoseDataModule
from .pose_views import Augment
from .segmentation import SegmentationDataModule
from .stream import CorruptedImages, StreamDataModule
from .stream_files import CifarC, ImageNetC
from .stream_volumes import ArtifactVolumes
from .transforms import InputSpec
from .volumes import DatalistError, VolumeSpec

__all__ = [
    "benchmarks",
    "Augment",
    "PoseDataModule",
    "DetectionDataModule",
    "ClassSplit",
    "ClassSplitError",
    "DigitsDataModule",
    "ImageClassificationDataModule",
    "ImageFolderDataModule",
    "InputSpec",
    "DatalistError",
    "SegmentationDataModule",
    "CorruptedImages",
    "StreamDataModule",
    "CifarC",
    "ArtifactVolumes",
    "ImageNetC",
    "VolumeSpec",
]
