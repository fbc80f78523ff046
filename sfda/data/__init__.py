"""Datamodules, datasets, offline fetchers and augmentation views."""

from .class_split import ClassSplit, ClassSplitError
from .datamodules import DigitsDataModule, ImageClassificationDataModule
from .folder import ImageFolderDataModule
from .transforms import InputSpec

__all__ = ["ClassSplit", "ClassSplitError", "DigitsDataModule", "ImageClassificationDataModule", "ImageFolderDataModule", "InputSpec"]
