"""MONAI bundles (the Model Zoo layout) as segmentation source models, read as data.

A bundle folder holds ``configs/metadata.json`` (label names, input channels and patch shape),
``configs/inference.json`` or ``.yaml`` (its ``network_def``) and ``models/model.pt`` (a state dict).
A bundle config can run code (``$`` expressions, any ``_target_``, ``@`` references, ``import``), so sfda
never evaluates it: ``network_def`` must name a class of ``monai.networks.nets`` with plain JSON
arguments (an ``@name`` argument may name a plain top-level value), and only plain values are read from
the rest (``Spacingd.pixdim``, ``ScaleIntensityRangePercentilesd.lower/upper`` of ``preprocessing``).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn

from ..data.fetch import resolve
from ..data.volumes import VolumeSpec
from .weights import ArtifactError, check_finite_weights, load_matching

NETS_PREFIX = "monai.networks.nets."
WRAPPER_KEYS = ("model", "state_dict")  # where a checkpoint may keep the network's state dict
IGNORED_KEYS = ("_desc_",)  # special keys of a config item that carry no behaviour
SPEC_FIELDS = ("roi", "spacing", "intensity_percentiles", "slice_axis")  # what a recipe may state
STATED_IN = {"roi": "metadata.json: network_data_format.inputs.image.spatial_shape as numbers",
             "spacing": "inference config: preprocessing Spacingd.pixdim",
             "intensity_percentiles": "inference config: preprocessing ScaleIntensityRangePercentilesd "
                                      "to [0, 1], clipped"}


@dataclass
class MonaiBundle:
    """``model.source: {bundle: ..., input: {...}}`` in a recipe.

    Args:
        bundle: the bundle folder (``configs/metadata.json``, ``configs/inference.json``,
            ``models/model.pt``).
        input: ``VolumeSpec`` fields the bundle does not state: ``spacing`` (mm), ``intensity_percentiles``,
            ``roi`` (when ``spatial_shape`` is not fixed numbers), ``slice_axis`` (2-D; default 2).
            A field the bundle states must agree.
    """

    bundle: str
    input: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.input or {}, dict):
            raise ArtifactError(f"model.source.input: expected a mapping of {list(SPEC_FIELDS)}, got "
                                f"{self.input!r}")
        self.input = dict(self.input or {})
        unknown = sorted(set(self.input) - set(SPEC_FIELDS))
        if unknown:
            raise ArtifactError(f"model.source.input: unknown fields {unknown}; a bundle's input takes "
                                f"{list(SPEC_FIELDS)} (mode and channels come from its metadata.json)")


@dataclass
class BundleModel:
    """What a bundle gives a segmentation source artifact: ``architecture`` ``{"target", "kwargs"}``,
    the checked ``state_dict``, ``class_names`` (output channel order) and the ``input`` spec."""

    architecture: dict
    state_dict: dict
    class_names: list[str]
    input: VolumeSpec
    origin: str  # the bundle folder (for messages)


def _is_plain(value) -> bool:
    """A JSON number, string, boolean or null, or a (nested) list of those."""
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _code_in(value) -> str:
    """What makes a plain value code to a MONAI config ('' if nothing): a ``$`` expression, an ``@``
    reference or a ``%`` macro, anywhere in it."""
    if isinstance(value, list):
        return next((found for found in map(_code_in, value) if found), "")
    if isinstance(value, str) and value[:1] in "$@%":
        return {"$": "an expression", "@": "a reference", "%": "a macro"}[value[0]]
    return ""


def _argument(name: str, value, config: dict, where: str):
    """The plain value of a ``network_def`` argument; an ``@name`` reference to a plain top-level value is
    resolved, anything else that is code or not plain is refused naming ``where`` and the key path."""
    path = f"{where}: network_def.{name}"
    if isinstance(value, str) and value.startswith("@"):
        target = value[1:]
        resolved = config.get(target) if target.isidentifier() else None
        if resolved is None or not _is_plain(resolved) or _code_in(resolved):
            raise ArtifactError(f"{path}: {value!r} is a reference sfda does not resolve (only '@name' of a "
                                "plain top-level value: a number, string, boolean or list); sfda never "
                                "evaluates bundle code, write the value itself")
        return resolved
    kind = _code_in(value)
    if kind:
        raise ArtifactError(f"{path}: {value!r} is {kind}; sfda never evaluates bundle code, write the value "
                            "itself")
    if isinstance(value, dict) and "_target_" in value:
        raise ArtifactError(f"{path}: a nested _target_ ({value['_target_']!r}) builds an object; sfda never "
                            "evaluates bundle code, only plain arguments are accepted")
    if not _is_plain(value):
        raise ArtifactError(f"{path}: expected a plain value (number, string, boolean, null or a list of "
                            f"those), got {type(value).__name__} {value!r}")
    return value


def nets():
    """``monai.networks.nets``, imported on first use (``import sfda.models`` does not import MONAI)."""
    import monai.networks.nets

    return monai.networks.nets


def network_name(target, where: str) -> str:
    """The ``monai.networks.nets`` class that ``_target_`` names (``UNet`` or ``monai.networks.nets.UNet``);
    anything else is refused without being imported."""
    name = target.removeprefix(NETS_PREFIX) if isinstance(target, str) else ""
    found = getattr(nets(), name, None) if name.isidentifier() else None
    if not (inspect.isclass(found) and issubclass(found, nn.Module)):
        raise ArtifactError(f"{where}: network_def._target_: {target!r} is not a network class of "
                            "monai.networks.nets (e.g. 'UNet', 'BasicUNet', 'SegResNet'); sfda never "
                            "evaluates bundle code, so no other callable is accepted")
    return name


def network_architecture(config: dict, where: str) -> dict:
    """``{"target": "monai.networks.nets:Name", "kwargs": {...}}`` of the config's ``network_def``."""
    definition = config.get("network_def")
    if not isinstance(definition, dict):
        found = "missing" if definition is None else f"{type(definition).__name__} {definition!r}"
        raise ArtifactError(f"{where}: network_def: expected a mapping with '_target_' naming a "
                            f"monai.networks.nets class and its plain arguments, got {found}")
    special = [key for key in definition if key.startswith("_") and key.endswith("_")
               and key not in ("_target_", *IGNORED_KEYS)]
    if special:
        raise ArtifactError(f"{where}: network_def.{special[0]}: sfda never evaluates bundle code; only "
                            "'_target_' and plain arguments are accepted")
    name = network_name(definition.get("_target_"), where)
    kwargs = {key: _argument(key, value, config, where) for key, value in definition.items()
              if key != "_target_" and key not in IGNORED_KEYS}
    for key, value in kwargs.items():
        if value and ("pretrained" in key or key.endswith("url")):
            raise ArtifactError(f"{where}: network_def.{key}: {value!r} would download weights while the "
                                "network is built; sfda loads the bundle's models/model.pt, set it false")
    return {"target": f"{NETS_PREFIX[:-1]}:{name}", "kwargs": kwargs}


def _read_config(path: Path, what: str) -> dict:
    """A bundle config file as plain data (JSON, or YAML read with ``safe_load``); nothing is evaluated."""
    try:
        text = path.read_text(encoding="utf-8")
        content = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
        raise ArtifactError(f"{path}: not a readable bundle {what} ({type(err).__name__}: {err})") from err
    if not isinstance(content, dict):
        raise ArtifactError(f"{path}: expected a mapping (the bundle's {what}), got {type(content).__name__}")
    return content


def _config_file(folder: Path, stem: str) -> Path:
    """``configs/<stem>.json`` (or ``.yaml`` / ``.yml``) of the bundle; refused naming the path if absent."""
    for suffix in (".json", ".yaml", ".yml"):
        path = folder / "configs" / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise ArtifactError(f"{folder / 'configs' / stem}.json: not found; a MONAI bundle holds "
                        f"configs/metadata.json, configs/inference.json and models/model.pt")


def _single(metadata: dict, section: str, preferred: str, where: str) -> tuple[str, dict]:
    """The ``preferred`` entry of the metadata's ``network_data_format.<section>``, else its only entry."""
    data_format = metadata.get("network_data_format")
    section = data_format.get(section) if isinstance(data_format, dict) else None
    if isinstance(section, dict) and isinstance(section.get(preferred), dict):
        return preferred, section[preferred]
    if isinstance(section, dict) and len(section) == 1 and isinstance(next(iter(section.values())), dict):
        return next(iter(section.items()))
    found = list(section) if isinstance(section, dict) else section
    raise ArtifactError(f"{where}: expected '{preferred}' (or a single entry) describing the network's "
                        f"tensor, found {found!r}")


def label_names(metadata: dict, where: str) -> list[str]:
    """The output ``channel_def`` ``{"0": "background", "1": ...}`` as names in channel order."""
    key, output = _single(metadata, "outputs", "pred", f"{where}: network_data_format.outputs")
    at = f"{where}: network_data_format.outputs.{key}"
    channels = output.get("channel_def")
    if not isinstance(channels, dict) or not channels:
        raise ArtifactError(f"{at}.channel_def: expected the label names {{'0': 'background', '1': ...}}, "
                            f"got {channels!r}")
    names = [channels.get(str(i)) for i in range(len(channels))]
    if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise ArtifactError(f"{at}.channel_def: expected distinct names for channels "
                            f"'0'..'{len(channels) - 1}', got {channels!r}")
    stated = output.get("num_channels")
    if stated is not None and stated != len(names):
        raise ArtifactError(f"{at}.num_channels: {stated} but channel_def names {len(names)} labels")
    return names


def stated_preprocessing(config: dict) -> dict:
    """``spacing`` and ``intensity_percentiles`` where the config's ``preprocessing`` states them as plain
    values (``Spacingd.pixdim``; ``ScaleIntensityRangePercentilesd`` to [0, 1], clipped)."""
    stated, pending = {}, [config.get("preprocessing")]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        pending.extend(item.values())
        name = str(item.get("_target_", "")).rpartition(".")[2]
        pixdim = item.get("pixdim")
        if name in ("Spacingd", "Spacing") and isinstance(pixdim, list) and len(pixdim) == 3 and \
                all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pixdim):
            stated["spacing"] = [float(v) for v in pixdim]
        bounds = [item.get("lower"), item.get("upper")]
        if name in ("ScaleIntensityRangePercentilesd", "ScaleIntensityRangePercentiles") and \
                all(isinstance(v, (int, float)) for v in bounds) and item.get("b_min") == 0 and \
                item.get("b_max") == 1 and item.get("clip") is True:
            stated["intensity_percentiles"] = [float(v) for v in bounds]
    return stated


def volume_spec(metadata: dict, config: dict, given: dict, metadata_path: Path, config_path: Path
                ) -> VolumeSpec:
    """The input spec: mode, roi and channels from the metadata's input (``spatial_shape``,
    ``num_channels``), spacing and intensity percentiles from the config's preprocessing; the recipe's
    ``input`` fills what the bundle leaves out and must agree with what it states."""
    where = str(metadata_path)
    key, image = _single(metadata, "inputs", "image", f"{where}: network_data_format.inputs")
    at = f"{where}: network_data_format.inputs.{key}"
    shape, channels = image.get("spatial_shape"), image.get("num_channels")
    if not isinstance(shape, list) or len(shape) not in (2, 3):
        raise ArtifactError(f"{at}.spatial_shape: expected 2 or 3 sizes (a 2-D or 3-D network), got "
                            f"{shape!r}")
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise ArtifactError(f"{at}.num_channels: expected a positive count of image channels, got "
                            f"{channels!r}")
    stated = stated_preprocessing(config)
    if all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        stated["roi"] = list(shape)  # else a rule such as '16*n': the recipe chooses the window
    fields = {}
    for name in SPEC_FIELDS:
        bundle_value, recipe_value = stated.get(name), given.get(name)
        if isinstance(recipe_value, tuple):
            recipe_value = list(recipe_value)
        if bundle_value is not None and recipe_value is not None and recipe_value != bundle_value:
            source = at if name == "roi" else f"{config_path}: preprocessing"
            raise ArtifactError(f"model.source.input.{name}: {recipe_value} but the bundle states "
                                f"{bundle_value} ({source}); remove it from the recipe or correct it")
        value = recipe_value if recipe_value is not None else bundle_value
        if value is None and name != "slice_axis":
            raise ArtifactError(f"model.source.input.{name}: the bundle {metadata_path.parents[1]} does not "
                                f"state it as plain values ({STATED_IN[name]}); give the {name} the model "
                                f"was trained with in the recipe: model.init_args.source: {{bundle: ..., "
                                f"input: {{{name}: ...}}}}")
        if value is not None:
            fields[name] = value
    try:
        return VolumeSpec(mode=f"{len(shape)}d", channels=channels, **fields)
    except (TypeError, ValueError) as err:
        raise ArtifactError(f"model.source.input: not a valid input spec for {where} ({err})") from err


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """``models/model.pt`` read with ``weights_only=True``: a state dict, or one under ``model`` /
    ``state_dict``."""
    if not path.is_file():
        raise ArtifactError(f"{path}: not found; a MONAI bundle keeps its weights in models/model.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise ArtifactError(f"{path}: cannot read weights with weights_only=True "
                            f"({type(err).__name__}: {err})") from err
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    tensors = isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    if not tensors or not state:
        raise ArtifactError(f"{path}: expected a state dict (name -> tensor), or one under "
                            f"{' or '.join(WRAPPER_KEYS)}, got {type(state).__name__}")
    check_finite_weights(state, str(path))
    return state


def read_bundle(source: MonaiBundle) -> BundleModel:
    """Read and check a bundle without running any of it; the weights are loaded into the network once,
    so weights that do not fit it are refused here, naming ``models/model.pt``."""
    try:
        folder = resolve(source.bundle)
    except FileNotFoundError as err:
        raise ArtifactError(f"model.source.bundle: {err}") from err
    if not folder.is_dir():
        raise ArtifactError(f"model.source.bundle: {folder} is not a folder; expected a MONAI bundle "
                            "(configs/metadata.json, configs/inference.json, models/model.pt)")
    metadata_path, config_path = _config_file(folder, "metadata"), _config_file(folder, "inference")
    metadata = _read_config(metadata_path, "metadata")
    config = _read_config(config_path, "inference config")
    architecture = network_architecture(config, str(config_path))  # refused before anything is built
    names = label_names(metadata, str(metadata_path))
    spec = volume_spec(metadata, config, source.input, metadata_path, config_path)
    for argument, expected in (("in_channels", spec.channels), ("out_channels", len(names)),
                               ("spatial_dims", spec.spatial_dims)):
        value = architecture["kwargs"].get(argument)
        if value is not None and value != expected:
            raise ArtifactError(f"{config_path}: network_def.{argument}: {value}, but {metadata_path} "
                                f"implies {expected}")
    weights_path = folder / "models" / "model.pt"
    state = read_weights(weights_path)
    cls = getattr(nets(), architecture["target"].rpartition(":")[2])
    try:
        network = cls(**architecture["kwargs"])
    except (TypeError, ValueError, RuntimeError) as err:
        raise ArtifactError(f"{config_path}: network_def: arguments {architecture['kwargs']} do not build "
                            f"{cls.__name__}: {err}") from err
    load_matching(network, state, str(weights_path), f"{config_path.name} network_def ({cls.__name__})")
    return BundleModel(architecture=architecture, state_dict=state, class_names=names, input=spec,
                       origin=str(folder))
