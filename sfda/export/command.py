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
import itertools
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from ..models.deployable import with_explicit_batch_statistics
from .card import write_card, write_json
from .formats import FILE_NAMES, FORMATS, ExportError, check_parity, require_exporter, write

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
    info = json.loads((run_dir / "run_info.json").read_text())
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
    selected = results.get("selected/checkpoint")
    if ckpt in (None, "selected") and selected and (run_dir / selected).is_file():
        return run_dir / selected
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
    inputs = target_inputs(task, datamodule)
    staging = folder.parent / f".{folder.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        try:
            write(fmt, deployable, inputs, staging / FILE_NAMES[fmt], task.export_outputs,
                  task.export_batch_dynamic)
        except Exception as err:  # an exporter's failure names the network and the format
            raise ExportError(f"--format {fmt}: the {task.name} network {type(deployable).__name__} could "
                              f"not be exported ({type(err).__name__}: {str(err)[:400]}); the other formats "
                              f"may still work: {', '.join(f for f in FORMATS if f != fmt)}") from err
        parity = check_parity(fmt, staging / FILE_NAMES[fmt], deployable, inputs, task.export_outputs,
                              task.export_batch_dynamic, reference=network)
        write_json(staging / "parity.json", parity)
        if not parity["passed"]:
            raise ExportError(f"--format {fmt}: the export's outputs differ from PyTorch's beyond the "
                              f"tolerance {parity['tolerance']} x max(1, max |output|): {parity['outputs']}; "
                              "nothing was written")
        recipe = yaml_of(run_dir / "config.yaml")
        artifact = getattr(module, "artifact", None)
        spec = {**task.deployment_spec(module), "format": fmt, "file": FILE_NAMES[fmt],
                "batch": "any size" if task.export_batch_dynamic else "one image per call"}
        if artifact is not None:
            spec["architecture"] = artifact.architecture  # what safetensors weights load into
        write_json(staging / "preprocessing.json", spec)
        write_card(staging, run_dir=run_dir, checkpoint=checkpoint, fmt=fmt, model_file=FILE_NAMES[fmt],
                   run_info=info, results=results, recipe=recipe, parity=parity)
        staging.rename(folder) if not folder.exists() else _move_into(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder, parity


def target_inputs(task, datamodule, wanted: int = PARITY_INPUTS, batches: int = 4) -> torch.Tensor:
    """At least ``wanted`` export inputs (where the first ``batches`` prediction batches hold them) cut by the
    task from the run's own target data, float32."""
    inputs = []
    for batch in itertools.islice(datamodule.predict_dataloader(), batches):
        inputs.append(task.export_inputs(batch).float())
        if sum(len(x) for x in inputs) >= wanted or inputs[-1].shape[1:] != inputs[0].shape[1:]:
            break
    if inputs[-1].shape[1:] != inputs[0].shape[1:]:
        inputs.pop()  # inputs of another size (detection images are one size; be safe)
    return torch.cat(inputs)[:wanted].contiguous()


def _move_into(staging: Path, folder: Path) -> None:
    for item in staging.iterdir():
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
    if parity.get("single_sample"):
        worst = max(f["max_abs_diff"] for f in parity["single_sample"].values())
        lines.append(f"one input alone (dynamic batch size): max |difference| {worst:.3g}")
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
    except (ValueError, OSError) as err:
        print(f"sfda export: error: {err}", file=sys.stderr)
        return 1
    print(summary(folder, parity))
    return 0
