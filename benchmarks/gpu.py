"""GPU rows: SHOT SVHN->MNIST epochs in each precision, channels-last on and off, and a segmentation epoch.

    python benchmarks/gpu.py [--out DIR]

Run on a CUDA machine (this repository's sessions get one only sometimes). Each case is one
``sfda fit`` process of a recipe, unchanged but for the trainer's accelerator, precision and
``channels_last``:

- SHOT on SVHN -> MNIST (the real ccexam SVHN network, all 60k MNIST training images), one epoch in
  ``32-true``, ``16-mixed`` and ``bf16-mixed``, each with channels-last on (sfda's default) and off.
  Rows: ``epoch-seconds`` (engine pass + steps + validation), ``images-per-s`` over the whole epoch,
  ``train-images-per-s`` over the training steps alone (epoch minus engine pass and validation),
  and ``acc`` after the epoch (target labels report only).
- Segmentation: source training on Colin27 2-D slices (``recipes/segmentation/colin27_itk/source.yaml``),
  two epochs in ``32-true`` and ``bf16-mixed``: ``epoch-seconds`` (mean of the two).

Rows go to ``benchmarks/results/gpu.json`` (and a copy to ``--out``); a failed case is printed and
recorded as a note row, never as a number.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

from common import RESULTS, ROOT, append_rows, row, run_cli

PRECISIONS = ("32-true", "16-mixed", "bf16-mixed")
GPU = ["--trainer.accelerator=gpu", "--trainer.devices=1", "--report_evidence=false"]
# --smoke: the same script on this CPU, tiny, nothing recorded (checks the script before a GPU lease)
SMOKE = ["--trainer.accelerator=cpu", "--data.init_args.train_subset=256", "--trainer.limit_val_batches=2",
         "--report_evidence=false"]


def device_name() -> str:
    done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                          capture_output=True, text=True)
    return done.stdout.strip() or "unknown GPU"


def shot_rows(precision: str, channels_last: bool, gpu: str, device: list[str]) -> list[dict]:
    """One SHOT epoch on the 60k SVHN->MNIST target in ``precision``."""
    layout = "channels-last" if channels_last else "NCHW"
    results, seconds = run_cli("fit", "recipes/digits/svhn_mnist/shot.yaml",
                               ROOT / "benchmarks" / "runs" / "gpu" / f"shot_{precision}_{layout}", *device,
                               f"--trainer.precision={precision}", "--trainer.max_epochs=1",
                               "--model.init_args.evaluate_source=false",
                               f"--channels_last={str(channels_last).lower()}")
    steps_s = results["timing/epoch_s"] - results.get("timing/engine_s", 0) - results["timing/validation_s"]
    images = results["timing/train_images_per_s"] * results["timing/epoch_s"]
    setting = f"gpu, {precision}, {layout}, 60000 target images/epoch"
    note = (f"{gpu}; one `sfda fit` epoch of recipes/digits/svhn_mnist/shot.yaml (engine pass "
            f"{results.get('timing/engine_s', 0):.1f}s, steps {steps_s:.1f}s, validation "
            f"{results['timing/validation_s']:.1f}s), 0 loader workers")
    common = dict(run=results, epochs=1, notes=note)
    epoch_s = results["timing/epoch_s"]
    return [row("svhn->mnist", setting, "shot", "epoch-seconds", epoch_s, seconds, **common),
            row("svhn->mnist", setting, "shot", "images-per-s", results["timing/train_images_per_s"], seconds,
                **common),
            row("svhn->mnist", setting, "shot", "train-images-per-s", images / steps_s, seconds, **common),
            row("svhn->mnist", setting, "shot", "acc", results["target/acc"], seconds, **common)]


def segmentation_rows(precision: str, gpu: str, device: list[str]) -> list[dict]:
    """Two source-training epochs on Colin27 slices in ``precision``."""
    folder = ROOT / "benchmarks" / "runs" / "gpu" / f"segmentation_{precision}"
    device = [o for o in device if "train_subset" not in o]
    results, seconds = run_cli("fit", "recipes/segmentation/colin27_itk/source.yaml", folder, *device,
                               f"--trainer.precision={precision}", "--trainer.max_epochs=2",
                               "--trainer.check_val_every_n_epoch=2",
                               f"--model.init_args.artifact={folder / 'source.pt'}")
    note = (f"{gpu}; source training (2-D UNet, 128x128 slices of Colin27), mean of 2 epochs, "
            "validation at the second")
    return [row("colin27->itk", f"gpu, {precision}", "source", "epoch-seconds", results["timing/epoch_s"],
                seconds, run=results, epochs=2, notes=note)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also copy gpu.json here")
    parser.add_argument("--smoke", action="store_true", help="tiny runs on this CPU, nothing recorded")
    args = parser.parse_args()
    device = SMOKE if args.smoke else GPU
    gpu = "cpu smoke test" if args.smoke else device_name()
    print(gpu, flush=True)
    cases = [("shot", p, cl) for p in PRECISIONS for cl in (True, False)]
    cases += [("segmentation", p, True) for p in ("32-true", "bf16-mixed")]
    for kind, precision, channels_last in cases:
        try:
            if kind == "shot":
                rows = shot_rows(precision, channels_last, gpu, device)
            else:
                rows = segmentation_rows(precision, gpu, device)
        except RuntimeError as err:  # a failed run: say so, record no number
            print(f"{kind} {precision} channels_last={channels_last} FAILED: {str(err)[-1500:]}", flush=True)
            continue
        print(json.dumps([(r["setting"], r["metric"], r["value"]) for r in rows]), flush=True)
        if args.smoke:
            continue
        append_rows("gpu", rows)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            shutil.copy(RESULTS / "gpu.json", args.out / "gpu.json")


if __name__ == "__main__":
    main()
