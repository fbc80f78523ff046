"""Pure nn.Modules, builders, and source-artifact save/load/wrap."""

from .artifact import (
    ArtifactError,
    ArtifactFile,
    ExternalModel,
    SourceArtifact,
    SourceModel,
    artifact_from_module,
    load_artifact,
    load_source,
    wrap_external,
)
from .bundle import MonaiBundle
from .classifier import SourceClassifier
from .feature_classifier import FeatureClassifier

__all__ = ["ArtifactError", "ArtifactFile", "ExternalModel", "SourceArtifact", "SourceModel",
           "artifact_from_module", "load_artifact", "load_source", "wrap_external", "SourceClassifier",
           "FeatureClassifier", "MonaiBundle"]
