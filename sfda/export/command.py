"""``sfda export RUN_DIR [--ckpt selected|last|PATH] --format onnx|torchscript|safetensors [--out DIR]``.

The evaluated network of a run (Mean Teacher's and LPLD's teacher, pose SFDA's intermediate network, the
adapted network of every other method) in eval mode, written in one format (``sfda.export.formats``)
with ``preprocessing.json``, ``parity.json`` and ``MODEL_CARD.md`` beside it (``sfda.export.card``).
The checkpoint: ``selected`` (the one a label-free validator picked, ``selection.by``), ``last``, or a
path; by default the run's result, its selected checkpoint where it recorded one, else ``last.ckpt``.
The output folder (default ``RUN_DIR/export/<format>``) must not hold files: nothing is overwritten. An
export whose outputs differ from PyTorch's beyond the tolerance is removed and the command fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from ..models.deployable import uses_batch_statistics, with_explicit_batch_statistics
from .card import write_card, write_json
from .formats import FILE_NAMES, FORMATS, ExportError, check_parity, plain_network, require_exporter, write

PARITY_INPUTS = 8  # target inputs the parity check runs (detection: one at a time)

# (run's config.yaml, checkpoint, scratch folder) -> (the method with the checkpoint's weights, the run's
# datamodule set up for prediction); ``sfda.cli.loaded_run``, given by ``sfda.commands``
RunLoader = Callable[[Path, Path, Path], tuple]


def run_records(run_dir: Path) -> tuple[dict, dict]:
    """``(run_info.json, results.json)`` of a run folder (results may be absent: ``{}``)."""
    if not run_dir.is_dir():
        raise ExportError(f"RUN_DIR {run_dir}: no such folder; expected a run folder runs/<recipe>/version_N")
    missing = [name for name in ("config.yaml", "run_info.json") if not (run_dir / name).is_file()]
    if missing:
        raise ExportError(f"RUN_DIR {run_dir}: not a run folder (no {' or '.join(missing)}); expected the "
                          "folder `sfda fit` printed as its run folder, runs/<recipe>/version_N")
    try:
        info = json.loads((run_dir / "run_info.json").read_text())
    except ValueError as err:
        raise ExportError(f"{run_dir / 'run_info.json'}: not valid JSON ({err})") from err
    if str(info.get("method", "")).endswith("SourceTraining"):
        raise ExportError(f"RUN_DIR {run_dir}: a source-training run; its result is the source artifact "
                          "its recipe names (model.init_args.artifact: the selected epoch, not last.ckpt); "
                          "export a run that adapts it")
    results_path = run_dir / "results.json"
    return info, json.loads(results_path.read_text()) if results_path.is_file() else {}


def choose_checkpoint(run_dir: Path, ckpt: str | None, results: dict) -> Path:
    """The checkpoint ``--ckpt`` names (see the module docstring); errors say what the run holds."""
    if ckpt not in (None, "selected", "last"):
        path = Path(ckpt)
        if not path.is_file():
            raise ExportError(f"--ckpt {ckpt}: no such checkpoint file; expected 'selected', 'last' or the "
                              "path of a .ckpt file")
        return path
    recorded = results.get("selected/checkpoint")
    selected = run_dir / (recorded or "checkpoints/selected.ckpt")
    if recorded and not selected.is_file() and ckpt in (None, "selected"):
        raise ExportError(f"--ckpt selected: the run {run_dir} selected {recorded} (results.json), which "
                          "does not exist (deleted or moved); restore it, or pass --ckpt last")
    if ckpt in (None, "selected") and selected.is_file():
        return selected
    if ckpt == "selected":
        raise ExportError(f"--ckpt selected: the run {run_dir} selected no checkpoint (its recipe had no "
                          "selection.by); use --ckpt last")
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_symlink() and not last.exists():
        raise ExportError(f"--ckpt last: {last} is a link to {last.readlink()}, which does not exist")
    if not last.is_file():
        raise ExportError(f"RUN_DIR {run_dir}: no checkpoint to export (no checkpoints/last.ckpt). `sfda "
                          "fit` writes one at each epoch end; a `sfda test` run or a source-only evaluation "
                          "has none (export the run that adapted the model, or pass --ckpt PATH)")
    return last


def output_folder(out: Path | None, run_dir: Path, fmt: str) -> Path:
    """``out`` (default ``RUN_DIR/export/<format>``), refused when it holds anything."""
    folder = out if out is not None else run_dir / "export" / fmt
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ExportError(f"--out {folder}: already holds files; sfda export never overwrites: remove it or "
                          "choose another --out")
    return folder


def export(run_dir: Path, ckpt: str | None, fmt: str, out: Path | None,
           load_run: RunLoader) -> tuple[Path, dict]:
    """Export the run's evaluated network; ``(output folder, parity figures)``. Raises ExportError."""
    require_exporter(fmt)
    info, results = run_records(run_dir)
    checkpoint = choose_checkpoint(run_dir, ckpt, results)
    folder = output_folder(out, run_dir, fmt)
    with tempfile.TemporaryDirectory(prefix="sfda-export-") as scratch:
        module, datamodule = load_run(run_dir / "config.yaml", checkpoint, Path(scratch))
    task = module.task
    network = task.deployable(module.evaluated_network().eval()).eval()
    # ONNX and TorchScript keep batch-statistics BatchNorm (Tent) as reductions; parity is against network
    deployable = network if fmt == "safetensors" else with_explicit_batch_statistics(network)
    artifact = getattr(module, "artifact", None)
    state, rebuild = weights_in_architecture(artifact, network) if fmt == "safetensors" else (None, None)
    inputs = target_inputs(task, datamodule)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))  # ours alone
    try:
        try:
            write(fmt, deployable, inputs, staging / FILE_NAMES[fmt], task.export_outputs,
                  task.export_batch_dynamic, state=state)
        except Exception as err:  # an exporter's failure names the network and the format
            raise ExportError(f"--format {fmt}: the {task.name} network {type(deployable).__name__} could "
                              f"not be exported ({type(err).__name__}: {str(err)[:400]}); the other formats "
                              f"may still work: {', '.join(f for f in FORMATS if f != fmt)}") from err
        parity = check_parity(fmt, staging / FILE_NAMES[fmt], deployable, inputs, task.export_outputs,
                              task.export_batch_dynamic, reference=network, rebuild=rebuild)
        write_json(staging / "parity.json", parity)
        if not parity["passed"]:
            raise ExportError(f"--format {fmt}: the export's outputs differ from PyTorch's beyond the "
                              f"tolerance {parity['tolerance']} x max(1, max |output|): {parity['outputs']}; "
                              "nothing was written")
        recipe = yaml_of(run_dir / "config.yaml")
        spec = {**task.deployment_spec(module), "format": fmt, "file": FILE_NAMES[fmt],
                "batch": "any size" if task.export_batch_dynamic else "one image per call"}
        if artifact is not None:
            spec["architecture"] = artifact.architecture  # what safetensors weights load into
        write_json(staging / "preprocessing.json", spec)
        write_card(staging, run_dir=run_dir, checkpoint=checkpoint, fmt=fmt, model_file=FILE_NAMES[fmt],
                   run_info=info, results=results, recipe=recipe, parity=parity)
        output_folder(folder, run_dir, fmt)  # still empty: another process may have written there since
        staging.rename(folder) if not folder.exists() else _move_into(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder, parity


def weights_in_architecture(artifact, network: torch.nn.Module) -> tuple[dict, Callable]:
    """For ``--format safetensors``: the adapted weights in the key layout of the architecture the
    artifact names (what a user rebuilds and loads), and a function that rebuilds that architecture from
    a state dict, strictly (the parity check loads the written file with it). Keys the adapted network
    does not hold (``num_batches_tracked`` of BatchNorm sfda froze) keep the source's values. Refused
    where weights alone cannot give the adapted model: no recorded architecture, or BatchNorm that
    normalises with each batch's statistics (Tent)."""
    if artifact is None:
        raise ExportError("--format safetensors: the run records no source architecture to load the weights "
                          "into; export onnx or torchscript")
    if any(uses_batch_statistics(m) for m in network.modules()):
        raise ExportError("--format safetensors: this network normalises with each batch's own statistics "
                          "(Tent); weights alone would be rebuilt with running statistics and predict "
                          "differently. Export onnx or torchscript, which keep the batch statistics")
    plain = plain_network(network).state_dict()
    fresh = artifact.build_network().state_dict()
    foreign = sorted(set(plain) - set(fresh))
    if foreign:
        raise ExportError(f"--format safetensors: the adapted network has tensors the architecture "
                          f"{artifact.architecture['target']} lacks: {foreign[:5]}; export onnx or "
                          "torchscript")
    state = {name: plain.get(name, value).detach().clone() for name, value in fresh.items()}

    def rebuild(loaded: dict) -> torch.nn.Module:
        written = dataclasses.replace(artifact, state_dict=loaded, origin="the exported safetensors")
        return written.build_network()

    return state, rebuild


def target_inputs(task, datamodule, wanted: int = PARITY_INPUTS, batches: int = 4) -> torch.Tensor:
    """At least ``wanted`` export inputs (where the first ``batches`` prediction batches hold them) cut by the
    task from the run's own target data, float32."""
    inputs = []
    for batch in itertools.islice(iter(datamodule.predict_dataloader()), batches):
        inputs.append(task.export_inputs(batch).float())
        if sum(len(x) for x in inputs) >= wanted or inputs[-1].shape[1:] != inputs[0].shape[1:]:
            break
    if not inputs:
        raise ExportError("the run's target data gave no prediction batch to check the export on; expected "
                          "the data its recipe names")
    if inputs[-1].shape[1:] != inputs[0].shape[1:]:
        inputs.pop()  # inputs of another size (detection images are one size; be safe)
    return torch.cat(inputs)[:wanted].contiguous()


def _move_into(staging: Path, folder: Path) -> None:
    """Move the staged files into the (empty) existing ``folder``, never over a file."""
    for item in staging.iterdir():
        if (folder / item.name).exists():
            raise ExportError(f"--out {folder}: {item.name} appeared there during the export; nothing was "
                              "overwritten")
        item.rename(folder / item.name)


def yaml_of(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def summary(folder: Path, parity: dict) -> str:
    """The lines the command prints: where the export is and its parity figures."""
    figures = ", ".join(f"{name} {f['max_abs_diff']:.3g} (allowed {f['allowed']:.3g})"
                        for name, f in parity["outputs"].items())
    lines = [f"sfda export: {folder} ({parity['format']}; preprocessing.json, parity.json, MODEL_CARD.md)",
             f"parity with PyTorch on {parity['inputs'][0]} target inputs, max |difference|: {figures}"]
    if parity.get("smaller_batch"):
        worst = max(f["max_abs_diff"] for f in parity["smaller_batch"].values())
        lines.append(f"a batch of {parity['inputs'][0] - 1} (dynamic batch size): max |difference| "
                     f"{worst:.3g}")
    return "\n".join(lines)


def main(argv: list[str], load_run: RunLoader) -> int:
    """``sfda export``: 0 on success, 1 on bad input or a failed parity check (one line naming why)."""
    parser = argparse.ArgumentParser(prog="sfda export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run folder, runs/<recipe>/version_N")
    parser.add_argument("--ckpt", default=None, help="selected, last, or a .ckpt path (default: the run's "
                        "selected checkpoint, else last)")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--out", type=Path, default=None, help="an empty or new folder (default "
                        "RUN_DIR/export/<format>)")
    args = parser.parse_args(argv)
    try:
        folder, parity = export(args.run_dir, args.ckpt, args.format, args.out, load_run)
    except Exception as err:  # one line naming why; SFDA_TRACEBACK=1 shows where
        if os.environ.get("SFDA_TRACEBACK"):
            raise
        kind = "" if isinstance(err, (ValueError, OSError)) else f"{type(err).__name__}: "
        print(f"sfda export: error: {kind}{err}\n(set SFDA_TRACEBACK=1 to see where it was raised)",
              file=sys.stderr)
        return 1
    print(summary(folder, parity))
    return 0
