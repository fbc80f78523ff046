"""MONAI bundles written by MONAI's own ``init_bundle``: a small 2-D UNet (BatchNorm), its metadata (label
names, input shape) and an inference config in the Model Zoo's form, ``$`` expressions included."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from monai.bundle import init_bundle
from monai.networks.nets import UNet

NAMES = ["background", "brain"]
SMALL_UNET = {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "channels": [8, 16, 32],
              "strides": [2, 2], "num_res_units": 2, "norm": "batch", "dropout": 0.0}
NETWORK_DEF = {"_target_": "UNet", **SMALL_UNET}
PREPROCESSING = {"_target_": "Compose", "transforms": [
    {"_target_": "LoadImaged", "keys": "image"},
    {"_target_": "EnsureChannelFirstd", "keys": "image"},
    {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
    {"_target_": "Spacingd", "keys": "image", "pixdim": [2.0, 2.0, 2.0], "mode": "bilinear"},
    {"_target_": "ScaleIntensityRangePercentilesd", "keys": "image", "lower": 1, "upper": 99, "b_min": 0.0,
     "b_max": 1.0, "clip": True},
]}


def metadata(names=NAMES, spatial_shape=(128, 128), channels: int = 1) -> dict:
    """``configs/metadata.json`` as the Model Zoo writes it; ``channel_def`` deliberately not in key order."""
    labels = {str(i): name for i, name in reversed(list(enumerate(names)))}
    return {"version": "0.1.0", "monai_version": "1.6.1", "task": "brain extraction",
            "network_data_format": {
                "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "MR",
                                     "num_channels": channels, "spatial_shape": list(spatial_shape),
                                     "dtype": "float32", "value_range": [0, 1], "is_patch_data": False,
                                     "channel_def": {"0": "T1"}}},
                "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": len(names),
                                     "spatial_shape": list(spatial_shape), "dtype": "float32",
                                     "value_range": [0, 1], "is_patch_data": False, "channel_def": labels}}}}


def inference(network_def=None, **top_level) -> dict:
    """``configs/inference.json``: code around a plain ``network_def`` (the Model Zoo's usual form)."""
    return {"imports": ["$import glob"], "bundle_root": ".",
            "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
            "network_def": copy.deepcopy(NETWORK_DEF if network_def is None else network_def),
            "network": "$@network_def.to(@device)", "preprocessing": copy.deepcopy(PREPROCESSING),
            "ckpt_path": "$@bundle_root + '/models/model.pt'", **top_level}


def small_unet(seed: int = 0, **changes) -> UNet:
    torch.manual_seed(seed)
    return UNet(**{**SMALL_UNET, **changes})


def write_bundle(folder: Path, network: torch.nn.Module | None = None, meta: dict | None = None,
                 config: dict | None = None, wrap: str = "") -> Path:
    """A bundle folder by ``monai.bundle.init_bundle``; ``models/model.pt`` the network's state dict (under
    ``wrap`` if given: a checkpoint's ``{"model": ...}``)."""
    network = small_unet() if network is None else network
    init_bundle(folder, metadata_str=meta or metadata(), inference_str=config or inference())
    state = network.state_dict()
    torch.save({wrap: state} if wrap else state, folder / "models" / "model.pt")
    return folder
