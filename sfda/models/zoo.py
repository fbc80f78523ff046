"""Model-zoo architectures a recipe names by library: ``timm:<model name>``,
``torchvision.models:<builder>`` (classification) and ``torchvision.models.detection:<builder>``
(Faster R-CNN detectors).

    source: {architecture: timm:resnet18, weights: my.safetensors, class_names: [...],
             kwargs: {num_classes: 6}}

The network is built by the library itself with no pretrained download (timm ``pretrained=False``,
torchvision ``weights=None``): its weights are the user's file. A classifier's head is the library's own
(timm ``get_classifier()``; torchvision's ``fc`` / ``classifier`` / ``heads`` / ``head``, their last
``nn.Linear``) and its adaptation feature is that head's input, which is timm's
``forward_head(pre_logits=True)``. The input spec defaults to timm's ``pretrained_cfg`` (size, mean, std)
or the torchvision builder's default weights' transforms. timm is imported only when a recipe names it
(the ``sfda[timm]`` extra). torchvision's segmentation builders are not offered: they are RGB
natural-image networks returning a dict, and sfda's segmentation task adapts volumetric MONAI networks.
"""

from __future__ import annotations

import difflib
import importlib

from torch import nn

from ..data.transforms import InputSpec
from .weights import ArtifactError

# scheme -> the task its networks are for
SCHEMES = {"timm": "classification", "torchvision.models": "classification",
           "torchvision.models.detection": "detection"}
DETECTION_BUILDERS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2",
                      "fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn")
AUXILIARY_HEADS = ("googlenet", "inception_v3")  # built without their auxiliary classifiers
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# torchvision's classifier heads, by attribute, in the order they are looked for
TORCHVISION_HEADS = ("fc", "classifier", "heads", "head")


def zoo_scheme(target: str) -> str | None:
    """``"timm"``, ``"torchvision.models"`` or ``"torchvision.models.detection"`` for a zoo target, else
    None (a ``module:Class`` or ``file.py:Class`` target)."""
    scheme, _, name = target.rpartition(":")
    return scheme if scheme in SCHEMES and name else None


def zoo_task(target: str) -> str | None:
    """The task a zoo target's networks are for; None for other targets."""
    scheme = zoo_scheme(target)
    return SCHEMES[scheme] if scheme else None


def _timm():
    try:
        return importlib.import_module("timm")
    except ModuleNotFoundError as err:
        raise ArtifactError("model.source.architecture names a timm model but timm is not installed; "
                            "install the extra: pip install 'sfda[timm]'") from err


def _unknown(target: str, name: str, known: list[str]) -> ArtifactError:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {close}?" if close else ""
    return ArtifactError(f"model.source.architecture: '{target}': the library has no model '{name}'{hint}")


def build_zoo_network(target: str, kwargs: dict) -> nn.Module:
    """The network ``target`` names, built by its library with ``kwargs`` and random weights (the user's
    weights are loaded after). Errors name the field and the expected value."""
    scheme, _, name = target.rpartition(":")
    kwargs = dict(kwargs)
    for refused in ("pretrained", "weights", "weights_backbone", "pretrained_cfg_overlay", "checkpoint_path"):
        value = kwargs.pop(refused, None)
        if value not in (None, False, ""):  # no weights asked for: what sfda passes anyway
            raise ArtifactError(f"model.source.kwargs.{refused} = {value!r}: the network's weights come from "
                                "model.source.weights only (nothing is downloaded); remove it")
    try:
        if scheme == "timm":
            timm = _timm()
            if not timm.is_model(name):
                raise _unknown(target, name, timm.list_models())
            return timm.create_model(name, pretrained=False, **kwargs)
        module = importlib.import_module(scheme)
        import torchvision.models as models

        known = models.list_models(module=module)
        if name not in known:
            raise _unknown(target, name, known)
        if scheme == "torchvision.models.detection":
            if name not in DETECTION_BUILDERS:
                raise ArtifactError(f"model.source.architecture: '{target}': sfda adapts two-stage Faster "
                                    f"R-CNN detectors (a region proposal network and RoI heads); expected "
                                    f"one of {list(DETECTION_BUILDERS)}")
            return models.get_model(name, weights=None, weights_backbone=None, **kwargs)
        if name in AUXILIARY_HEADS:  # their train-mode output is a tuple with the auxiliary logits
            kwargs.setdefault("aux_logits", False)
        return models.get_model(name, weights=None, **kwargs)
    except TypeError as err:
        raise ArtifactError(f"model.source.kwargs {kwargs} do not build {target}: {err}") from err


def classifier_head(network: nn.Module, target: str) -> str:
    """The dotted name of a zoo classifier's final ``nn.Linear`` (its head), from the library's API."""
    names = {module: name for name, module in network.named_modules()}
    if zoo_scheme(target) == "timm":
        head = network.get_classifier()
        if isinstance(head, nn.Linear) and head in names:
            return names[head]
        raise ArtifactError(f"model.source.architecture: '{target}' has no linear classifier head "
                            f"(get_classifier() is {type(head).__name__}); build it with num_classes >= 1")
    for attribute in TORCHVISION_HEADS:
        part = getattr(network, attribute, None)
        modules = part.modules() if isinstance(part, nn.Module) else []
        linears = [m for m in modules if isinstance(m, nn.Linear)]
        if linears:
            return names[linears[-1]]
    raise ArtifactError(f"model.source.architecture: '{target}': no nn.Linear head under any of "
                        f"{list(TORCHVISION_HEADS)}; name model.source.feature_layer and head_layer yourself "
                        "(architecture: torchvision.models:<builder> with head_layer: <module>)")


def default_input(network: nn.Module, target: str, kwargs: dict) -> InputSpec:
    """The input spec the library records for ``target``: timm's ``pretrained_cfg`` (its test size where
    it has one, replaced by ``kwargs['img_size']`` where given), the default weights' transforms of a
    torchvision classifier builder (crop size, mean, std), or a torchvision detector's own transform
    (its ``min_size``, mean, std)."""
    scheme, _, name = target.rpartition(":")
    if scheme == "timm":
        config = getattr(network, "pretrained_cfg", None) or {}
        # the evaluation size where timm records one apart from the training size (resnet10t: 176 / 224)
        channels, height, _ = config.get("test_input_size") or config.get("input_size", (3, 224, 224))
        size = kwargs.get("img_size", height)
        size = size[0] if isinstance(size, (tuple, list)) else size
        channels = int(kwargs.get("in_chans", channels))
        mean, std = tuple(config.get("mean", (0.5,) * 3)), tuple(config.get("std", (0.5,) * 3))
        if len(mean) != channels:  # in_chans differs from the recorded RGB statistics: their mean per channel
            mean, std = (sum(mean) / len(mean),) * channels, (sum(std) / len(std),) * channels
        return InputSpec(size=int(size), channels=channels, mean=mean, std=std)
    if scheme == "torchvision.models.detection":  # the detector normalises and resizes inside (its transform)
        transform = network.transform
        return InputSpec(size=int(transform.min_size[-1]), channels=3, mean=tuple(transform.image_mean),
                         std=tuple(transform.image_std))
    import torchvision.models as models

    transforms = models.get_model_weights(name).DEFAULT.transforms()
    size = transforms.crop_size[0] if hasattr(transforms, "crop_size") else 800
    mean, std = getattr(transforms, "mean", IMAGENET_MEAN), getattr(transforms, "std", IMAGENET_STD)
    return InputSpec(size=int(size), channels=3, mean=tuple(mean), std=tuple(std))
