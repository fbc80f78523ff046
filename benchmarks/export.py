"""Export parity, every task x format: ``sfda export`` of real adaptation runs, each format run through
onnxruntime / ``torch.jit.load`` / reloaded safetensors weights and compared with PyTorch on the run's own
target inputs (``sfda.export.formats``). Writes ``benchmarks/results/export.json``.

    python benchmarks/export.py [CASE ...] [--reuse-runs]

``--reuse-runs`` exports the runs a previous call left under ``benchmarks/runs/export/`` again (their
``export/`` folders replaced) instead of fitting them anew. Tent's networks normalise with batch
statistics, which weights alone cannot carry: their safetensors export is refused by design, so those
cases export ONNX and TorchScript only.

The runs are short (the figures are about the exporter, not about adaptation): one adaptation epoch from a
briefly trained source model.

- classification: SHOT and Tent adapting the SVHN digit model of the ``ccexam`` wheel to MNIST (real
  digits; 2,000 target images); Tent's BatchNorm normalises with batch statistics;
- detection: LPLD on yell fog (REAL aerial images, SYNTHETIC fog) from the benchmark's source detector;
- segmentation: Tent on Colin27 -> ITK (real MR volumes), a 2-D UNet trained 2 epochs; AdaBN with the 3-D
  UNet trained 2 epochs;
- pose: pose SFDA on the generated figures (SYNTHETIC), a source trained 1 epoch.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from common import ROOT, append_rows, row, run_cli

RUNS = ROOT / "benchmarks" / "runs" / "export"
FORMATS = ("onnx", "torchscript", "safetensors")
BATCH_STATISTICS = ("onnx", "torchscript")  # a Tent network: safetensors refused (see the docstring)
DIGITS_SMALL = ("--trainer.max_epochs=1", "--data.init_args.train_subset=2000",
                "--data.init_args.eval_subset=500")
SEGMENTATION_SMALL = ("--model.init_args.channels=[8,16,32]", "--model.init_args.strides=[2,2]")
# name -> (description, [(recipe, overrides)] run in order: sources first, the exported run last[, formats])
CASES = {
    "classification-shot": ("classification: SHOT, SVHN -> MNIST (real digits)", [
        ("recipes/digits/svhn_mnist/shot.yaml", DIGITS_SMALL)]),
    "classification-tent": ("classification: Tent (batch statistics), SVHN -> MNIST (real digits)", [
        ("recipes/digits/svhn_mnist/tent.yaml", DIGITS_SMALL)], BATCH_STATISTICS),
    "detection-lpld": ("detection: LPLD, yell fog (real images, synthetic fog)", [
        ("recipes/detection/yell_fog/lpld.yaml", ("--trainer.max_epochs=1",))]),
    "segmentation-2d-tent": ("segmentation: Tent 2-D, Colin27 -> ITK (real volumes)", [
        ("recipes/segmentation/colin27_itk/source.yaml",
         ("--trainer.max_epochs=2", "--model.init_args.artifact={root}/source.pt", *SEGMENTATION_SMALL)),
        ("recipes/segmentation/colin27_itk/tent.yaml",
         ("--trainer.max_epochs=1", "--model.init_args.source={root}/source.pt"))], BATCH_STATISTICS),
    "segmentation-3d-adabn": ("segmentation: AdaBN 3-D, Colin27 -> ITK (real volumes)", [
        ("recipes/segmentation/colin27_itk_3d/source.yaml",
         ("--trainer.max_epochs=2", "--model.init_args.artifact={root}/source.pt", *SEGMENTATION_SMALL)),
        ("recipes/segmentation/colin27_itk_3d/adabn.yaml", ("--model.init_args.source={root}/source.pt",))]),
    "pose-sfda": ("pose: pose SFDA, figures (synthetic)", [
        ("recipes/pose/figures/source.yaml",
         ("--trainer.max_epochs=1", "--model.init_args.artifact={root}/source.pt")),
        ("recipes/pose/figures/pose_sfda.yaml", ("--trainer.max_epochs=1",
                                                "--model.init_args.source={root}/source.pt"))]),
}


def export(run_dir, fmt: str) -> dict:
    """``sfda export RUN_DIR --format fmt`` in a subprocess; its parity.json."""
    out = run_dir / "export" / fmt
    done = subprocess.run([sys.executable, "-m", "sfda", "export", str(run_dir), "--format", fmt],
                          cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"sfda export {run_dir} --format {fmt} failed:\n{done.stderr[-3000:]}")
    return json.loads((out / "parity.json").read_text())


def case_rows(name: str, reuse: bool) -> list[dict]:
    description, steps, *formats = CASES[name]
    root = RUNS / name
    if not reuse:
        shutil.rmtree(root, ignore_errors=True)
        for index, (recipe, overrides) in enumerate(steps):
            run_cli("fit", recipe, root / f"step{index}", *[o.format(root=root) for o in overrides])
    run_dir = max((root / f"step{len(steps) - 1}").glob("version_*"))
    results = json.loads((run_dir / "results.json").read_text())
    seconds = results.get("wall_s", 0.0)
    shutil.rmtree(run_dir / "export", ignore_errors=True)  # this script's own exports
    rows = []
    for fmt in (formats[0] if formats else FORMATS):
        parity = export(run_dir, fmt)
        for output, figure in parity["outputs"].items():
            smaller = (parity.get("smaller_batch") or {}).get(output, {})
            entry = row("export parity", fmt, description, f"{output} max |diff|", 0.0, seconds, run=results,
                        inputs=parity["inputs"], allowed=figure["allowed"], passed=parity["passed"],
                        smaller_batch=smaller.get("max_abs_diff"),
                        notes="largest |export - PyTorch| over the run's own target inputs; allowed = 1e-4 "
                              "x max(1, max |output|); smaller_batch: all inputs but one (dynamic batch)")
            entry["value"] = float(f"{figure['max_abs_diff']:.3g}")  # far below row()'s 4 decimals
            rows.append(entry)
    return rows


def main() -> None:
    reuse = "--reuse-runs" in sys.argv
    for name in ([a for a in sys.argv[1:] if a != "--reuse-runs"] or CASES):
        rows = case_rows(name, reuse)
        path = append_rows("export", rows)
        print(name, [(r["setting"], r["metric"], r["value"]) for r in rows], "->", path.name, flush=True)


if __name__ == "__main__":
    main()
