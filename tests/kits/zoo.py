"""Model-zoo networks as a user holds them: a timm or torchvision classifier with random weights saved to
safetensors, and the recipe fields that name it (``sfda.models.zoo``)."""

from __future__ import annotations

from pathlib import Path

# name -> (architecture, kwargs): small enough for a CPU test on 32-pixel images
ZOO_MODELS = {
    "timm-resnet": ("timm:resnet10t", {"num_classes": 10}),
    "timm-vit": ("timm:vit_tiny_patch16_224",
                 {"num_classes": 10, "img_size": 32, "patch_size": 8, "depth": 2}),
    "timm-efficientnet": ("timm:efficientnet_b0", {"num_classes": 10}),
    "torchvision-resnet": ("torchvision.models:resnet18", {"num_classes": 10}),
}
SMALL_INPUT = {"size": 32, "channels": 3, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def zoo_weights(path: Path, architecture: str, kwargs: dict, seed: int = 0) -> Path:
    """``path`` (.safetensors): random weights of the zoo network ``architecture`` built with ``kwargs``."""
    import torch
    from safetensors.torch import save_file

    from sfda.models.zoo import build_zoo_network

    torch.manual_seed(seed)
    network = build_zoo_network(architecture, kwargs)
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(path))
    return path


def zoo_source(root: Path, name: str, with_input: bool = True) -> dict:
    """``model.source`` of the zoo model ``name`` (weights written under ``root``); ``with_input`` False
    leaves the input spec to the library's default."""
    architecture, kwargs = ZOO_MODELS[name]
    weights = zoo_weights(root / f"{name}.safetensors", architecture, kwargs)
    source = {"architecture": architecture, "weights": str(weights), "kwargs": kwargs,
              "class_names": [str(i) for i in range(10)]}
    return {**source, "input": SMALL_INPUT} if with_input else source
