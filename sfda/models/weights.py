"""Weights files as data: reading a state dict (``.safetensors`` or a ``torch.save`` read with
``weights_only=True``), refusing non-finite values, and loading into a network with the first differing
keys named. Nothing here runs code a file could name."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class ArtifactError(ValueError):
    """A source artifact or weights file is missing, unreadable or does not match the data."""


SAFETENSORS_SUFFIX = ".safetensors"
# key prefixes that wrapping a model adds to its state dict
WRAPPER_PREFIXES = {"module.": "DataParallel / DistributedDataParallel model",
                    "_orig_mod.": "torch.compile model",
                    "model.": "Lightning module or a wrapper's attribute"}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """``{name: tensor}`` of a weights file: safetensors by its suffix, else ``torch.load`` with
    ``weights_only=True`` (a plain state dict, not a checkpoint holding one)."""
    path = Path(path)
    if path.suffix == SAFETENSORS_SUFFIX:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise ArtifactError(f"{path}: not a readable safetensors file ({err})") from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise ArtifactError(f"{path}: cannot read weights with weights_only=True "
                            f"({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        inner = [k for k, v in state.items() if isinstance(v, dict)] if isinstance(state, dict) else []
        hint = f"; it holds mappings under {inner[:3]}: save that state dict alone" if inner else ""
        raise ArtifactError(f"{path}: expected a state dict (name -> tensor), got "
                            f"{type(state).__name__}{hint}")
    return state


def check_finite_weights(state: dict, where: str) -> None:
    """Refuse a state dict holding a floating tensor with a NaN or an infinity, naming ``where``."""
    bad = [name for name, value in state.items() if isinstance(value, torch.Tensor)
           and value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ArtifactError(f"{where}: non-finite weights (NaN or inf) in {bad[:5]}{more}; expected finite "
                            "values")


def weight_differences(module: nn.Module, state: dict) -> str:
    """The first keys ``state`` lacks or has in excess and the first shapes that differ from ``module``'s
    own; '' when they match."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    parts = [f"{what} {items[:5]}" + (f" and {len(items) - 5} more" if len(items) > 5 else "")
             for what, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                 ("shapes", shapes)) if items]
    for prefix in WRAPPER_PREFIXES:
        if unexpected and all(k.startswith(prefix) for k in unexpected) and \
                {k[len(prefix):] for k in unexpected} & set(missing):
            parts.append(f"the file's keys carry the prefix '{prefix}' (a {WRAPPER_PREFIXES[prefix]}); save "
                         f"the unwrapped model's state_dict, or strip '{prefix}' from the keys")
    return "; ".join(parts)


def load_matching(module: nn.Module, state: dict, where: str, architecture: str = "") -> None:
    """Load ``state`` into ``module`` strictly, refusing keys or shapes that differ (the first few named)."""
    differences = weight_differences(module, state)
    if differences:
        named = architecture or type(module).__name__
        raise ArtifactError(f"{where}: the weights do not match {named}: {differences}")
    module.load_state_dict(state)


def modernise_weight_norm(network: nn.Module) -> dict[str, str]:
    """Replace every ``torch.nn.utils.weight_norm`` (a forward pre-hook, as SHOT's and many published heads
    use) by the same ``g * v / |v|`` as a parametrization (``torch.nn.utils.parametrizations.weight_norm``):
    the hook's computed weight is no graph leaf, so such a network cannot be deep-copied, and sfda copies
    networks (teachers, folded evaluation copies). Returns ``{legacy key: new key}`` (``<m>.weight_g`` ->
    ``<m>.parametrizations.weight.original0``, ``_v`` -> ``original1``) so weights saved either way load."""
    from torch.nn.utils import parametrizations, remove_weight_norm
    from torch.nn.utils.weight_norm import WeightNorm

    renames = {}
    for prefix, module in network.named_modules():
        for hook in [h for h in module._forward_pre_hooks.values() if isinstance(h, WeightNorm)]:
            name, dim = hook.name, hook.dim
            remove_weight_norm(module, name)
            parametrizations.weight_norm(module, name, dim)
            at = f"{prefix}." if prefix else ""
            renames[f"{at}{name}_g"] = f"{at}parametrizations.{name}.original0"
            renames[f"{at}{name}_v"] = f"{at}parametrizations.{name}.original1"
    return renames
