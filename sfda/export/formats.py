"""The export formats and the parity check of each: write the module, load the written file the way a
serving stack would (onnxruntime, ``torch.jit.load``, ``safetensors``), run it on the same inputs and
compare with PyTorch.

What each format keeps:

- ``onnx``: the graph and weights (legacy TorchScript-based exporter, opset 17), batch size dynamic
  where the task allows (``Task.export_batch_dynamic``; detection is traced for one image, with
  torchvision's post-processing: NMS and the score filter are in the graph);
- ``torchscript``: the traced module (``torch.jit.trace``), loadable without sfda or its model code;
- ``safetensors``: the weights of the plain network only (no graph): rebuild the architecture named in
  ``preprocessing.json`` and load them.

Parity: every output's largest absolute difference must be at most ``TOLERANCE x max(1, max |PyTorch
output|)``; integer outputs (detection labels) must be equal, and every output must have PyTorch's shape.
"""

from __future__ import annotations

import copy
import importlib.util
import warnings
from pathlib import Path

import torch
from torch import nn

FORMATS = ("onnx", "torchscript", "safetensors")
FILE_NAMES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt", "safetensors": "model.safetensors"}
TOLERANCE = 1e-4  # relative to the output's scale (see the module docstring)
OPSET = 17


class ExportError(ValueError):
    """An export that cannot be written, or whose outputs differ from PyTorch's beyond the tolerance."""


def plain_network(module: nn.Module) -> nn.Module:
    """The network a deployable wraps (``plain_network`` of ``sfda.models.deployable``), else ``module``."""
    return getattr(module, "plain_network", module)


def outputs_of(result) -> tuple[torch.Tensor, ...]:
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


@torch.no_grad()
def write(fmt: str, module: nn.Module, inputs: torch.Tensor, path: Path, names: tuple[str, ...],
          dynamic: bool, state: dict | None = None) -> None:
    """Write ``module`` (eval mode) in format ``fmt`` to ``path``, traced on ``inputs`` (on its first
    sample alone when the batch size is not ``dynamic``). The tracer's warnings (a shape check read as a
    constant) are silenced: the parity check runs the result."""
    inputs = inputs if dynamic else inputs[:1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        _write(fmt, module, inputs, path, names, dynamic, state)


def require_exporter(fmt: str) -> None:
    """Refuse ``--format onnx`` by name when the ``sfda[export]`` extra (onnx, onnxruntime) is missing."""
    if fmt != "onnx":
        return
    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"--format onnx needs {' and '.join(missing)}: pip install 'sfda[export]'")


def _write(fmt: str, module: nn.Module, inputs: torch.Tensor, path: Path, names: tuple[str, ...],
           dynamic: bool, state: dict | None) -> None:
    if fmt == "onnx":
        axes = {name: {0: "batch"} for name in ("image", *names)} if dynamic else None
        torch.onnx.export(module, (inputs,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["image"], output_names=list(names), dynamic_axes=axes)
    elif fmt == "torchscript":
        torch.jit.trace(module, (inputs,), check_trace=False).save(str(path))
    else:
        from safetensors.torch import save_file

        state = state if state is not None else plain_network(module).state_dict()
        save_file({name: value.detach().contiguous().clone() for name, value in state.items()}, str(path))


@torch.no_grad()
def run_written(fmt: str, path: Path, module: nn.Module, inputs: torch.Tensor,
                rebuild=None) -> tuple[torch.Tensor, ...]:
    """The outputs of the written file on ``inputs``, loaded as a user would load it. Safetensors: into
    a fresh network of the named architecture, strictly (``rebuild``, where given), and from there into a
    copy of ``module`` (sfda's inference settings)."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return tuple(torch.from_numpy(out) for out in session.run(None, {"image": inputs.numpy()}))
    if fmt == "torchscript":
        return outputs_of(torch.jit.load(str(path), map_location="cpu")(inputs))
    from safetensors.torch import load_file

    loaded = load_file(str(path))
    if rebuild is not None:
        loaded = rebuild(loaded).state_dict()
    rebuilt = copy.deepcopy(module)
    plain = plain_network(rebuilt)
    plain.load_state_dict({name: loaded[name] for name in plain.state_dict()}, strict=True)
    return outputs_of(rebuilt(inputs))


def compare(reference: tuple[torch.Tensor, ...], exported: tuple[torch.Tensor, ...],
            names: tuple[str, ...]) -> dict:
    """``{output name: {max_abs_diff, allowed, passed}}`` of ``exported`` against ``reference``."""
    figures = {}
    for name, ref, out in zip(names, reference, exported, strict=True):
        if tuple(out.shape) != tuple(ref.shape):
            figures[name] = {"max_abs_diff": None, "allowed": 0.0, "passed": False,
                             "shape": f"{tuple(out.shape)} (PyTorch {tuple(ref.shape)})"}
            continue
        exact = not ref.is_floating_point()
        diff = float((out.double() - ref.double()).abs().max()) if ref.numel() else 0.0
        scale = float(ref.double().abs().max()) if ref.numel() else 0.0
        allowed = 0.0 if exact else TOLERANCE * max(1.0, scale)
        figures[name] = {"max_abs_diff": diff, "allowed": allowed, "passed": diff <= allowed}
    return figures


def worst(figures: list[dict]) -> dict:
    """The figure of the largest difference (a failed one first)."""
    return max(figures, key=lambda f: (not f["passed"], f["max_abs_diff"] or 0.0))


@torch.no_grad()
def check_parity(fmt: str, path: Path, module: nn.Module, inputs: torch.Tensor, names: tuple[str, ...],
                 dynamic: bool, reference: nn.Module | None = None, rebuild=None) -> dict:
    """Run the written file against PyTorch on ``inputs`` (one at a time when the batch size is not
    ``dynamic``: the worst figure of each output) and, for a dynamic batch, on a batch of another size
    (all inputs but the last; from 3 inputs):
    ``{"inputs": shape, "outputs": {...}, "smaller_batch": {...} or None, "tolerance", "passed"}``.
    ``reference`` (default ``module``): the network PyTorch's outputs come from, when ``module`` is an
    export-ready rewrite of it (``with_explicit_batch_statistics``); ``rebuild``: see ``run_written``."""
    reference = reference or module
    run = lambda x: run_written(fmt, path, module, x, rebuild)  # noqa: E731
    if dynamic:
        outputs = compare(outputs_of(reference(inputs)), run(inputs), names)
    else:
        each = [compare(outputs_of(reference(one)), run(one), names)
                for one in inputs.split(1)]
        outputs = {name: worst([figures[name] for figures in each]) for name in names}
    smaller = None
    if dynamic and inputs.shape[0] > 2 and fmt != "safetensors":
        fewer = inputs[:-1]
        smaller = compare(outputs_of(reference(fewer)), run(fewer), names)
    passed = all(o["passed"] for o in outputs.values()) and all(o["passed"] for o in (smaller or {}).values())
    return {"format": fmt, "inputs": list(inputs.shape), "tolerance": TOLERANCE, "outputs": outputs,
            "smaller_batch": smaller, "passed": passed}
