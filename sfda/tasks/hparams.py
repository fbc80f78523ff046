"""The method's constructor arguments as plain data, saved with every checkpoint and in ``hparams.yaml``."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from pathlib import Path

import lightning as L

PRIMITIVES = (str, int, float, bool, type(None))


def plain(value):
    """``value`` as plain data (dataclasses and mappings to dicts, sequences to lists, paths to strings,
    any other object to its class path): what a checkpoint read with ``weights_only=True`` may hold."""
    if isinstance(value, PRIMITIVES):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if hasattr(value, "as_dict"):  # a jsonargparse Namespace (the CLI's config)
        return plain(value.as_dict())
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return f"{type(value).__module__}.{type(value).__qualname__}"


def record_hyperparameters(module: L.LightningModule) -> None:
    """``save_hyperparameters`` of the calling ``__init__`` chain (or the CLI's config), as plain data."""
    module.save_hyperparameters(frame=inspect.currentframe().f_back)
    if module.hparams:
        module.save_hyperparameters(plain(dict(module.hparams)))
