"""Datamodules, datasets, offline fetchers and augmentation views."""

from .datamodules import DigitsDataModule, ImageClassificationDataModule
from .folder import ImageFolderDataModule
from .transforms import InputSpec

__all__ = ["DigitsDataModule", "ImageClassificationDataModule", "ImageFolderDataModule", "InputSpec"]
