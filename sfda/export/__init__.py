"""``sfda export``: a run's adapted network as ONNX, TorchScript or safetensors, checked against PyTorch
(``formats``), with its preprocessing spec and model card (``card``); the command in ``command``."""

from .command import export, main

__all__ = ["export", "main"]
