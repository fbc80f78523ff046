"""Pure nn.Modules, builders, and source-artifact save/load/wrap."""

from .artifact import (
           ArtifactError,
           ExternalModel,
           SourceArtifact,
           artifact_from_module,
           load_artifact,
           wrap_external,
)
from .classifier import SourceClassifier
from .feature_classifier import FeatureClassifier

__all__ = ["ArtifactError", "ExternalModel", "SourceArtifact", "artifact_from_module", "load_artifact",
           "wrap_external", "SourceClassifier", "FeatureClassifier"]
