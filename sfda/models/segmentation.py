"""Segmentation networks: MONAI's UNet with BatchNorm (the BN-based baselines need it)."""

from __future__ import annotations


def unet_architecture(spatial_dims: int, in_channels: int, num_classes: int,
                      channels: tuple[int, ...] = (32, 64, 128, 256), strides: tuple[int, ...] = (2, 2, 2),
                      num_res_units: int = 2, dropout: float = 0.0) -> dict:
    """The artifact ``architecture`` entry of a MONAI UNet (32 base filters as in the paper's code)."""
    return {"target": "monai.networks.nets:UNet",
            "kwargs": {"spatial_dims": spatial_dims, "in_channels": in_channels, "out_channels": num_classes,
                       "channels": list(channels), "strides": list(strides), "num_res_units": num_res_units,
                       "norm": "batch", "dropout": dropout}}
