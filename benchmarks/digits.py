"""Accuracy suite on real digits: SVHN->MNIST (ccexam model), MNIST<->optdigits.

    python benchmarks/digits.py svhn_mnist --methods shot nrc --epochs 10

Each method runs through the real CLI on the full target set; the target's labelled test
split is used only for the reported accuracy (never for checkpoint or hyper-parameter choice:
the last epoch is reported).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import ROOT, append_rows, row, run_cli

BENCHMARKS = {"svhn_mnist": "svhn->mnist", "mnist_optdigits": "mnist->optdigits",
              "optdigits_mnist": "optdigits->mnist"}
METHOD_NAMES = {"source_only": "source-only", "tent": "tent", "shot": "shot", "shot_im": "shot-im",
                "nrc": "nrc", "aad": "aad"}


def train_source(benchmark: str) -> list[dict]:
    """Train the source model of an MNIST<->optdigits benchmark with its recipe (writes
    runs/<benchmark>/source.pt)."""
    runs = ROOT / "benchmarks" / "runs" / benchmark / "source"
    # a benchmark rerun retrains on purpose
    results, seconds = run_cli("fit", f"recipes/digits/{benchmark}/source.yaml", runs,
                               "--model.init_args.overwrite_artifact=true")
    bench = BENCHMARKS[benchmark]
    return [row(bench, "closed", "source training", "source-val-acc", results["source_val/best_acc"], seconds,
                run=results, epochs=int(results["epochs"]),
                notes="accuracy on the held-out 10% of the SOURCE train split (chooses the source "
                      "checkpoint)")]


def run(benchmark: str, method: str, epochs: int | None, extra: list[str]) -> list[dict]:
    if method == "source":
        return train_source(benchmark)
    recipe = f"recipes/digits/{benchmark}/{method}.yaml"
    runs = ROOT / "benchmarks" / "runs" / benchmark / method
    overrides = list(extra) + ([f"--trainer.max_epochs={epochs}"] if epochs
                               and method not in ("source_only", "tent") else [])
    if method == "source_only":
        results, seconds = run_cli("test", recipe, runs, *overrides)
        n_epochs = 0
    else:
        results, seconds = run_cli("fit", recipe, runs, *overrides)
        n_epochs = int(results["epochs"])
    name, bench = METHOD_NAMES[method], BENCHMARKS[benchmark]
    rows = [row(bench, "closed", name, "acc", results["target/acc"], seconds, run=results, epochs=n_epochs),
            row(bench, "closed", name, "acc-per-class", results["target/acc_per_class"], seconds, run=results,
                epochs=n_epochs)]
    if n_epochs:
        timing = ("mean training-epoch wall time on this machine, incl. engine passes and per-epoch "
                  "validation on 10k")
        rows.append(row(bench, "closed", name, "epoch-seconds", results["timing/epoch_s"], seconds,
                        run=results, epochs=n_epochs, notes=timing))
        rows.append(row(bench, "closed", name, "images-per-s", results["timing/train_images_per_s"], seconds,
                        run=results, epochs=n_epochs,
                        notes="training images / epoch wall time (same epoch time as epoch-seconds)"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS))
    parser.add_argument("--methods", nargs="+", default=list(METHOD_NAMES),
                        help="methods to run in order; 'source' first trains the source model "
                             "(MNIST<->optdigits)")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's max_epochs")
    parser.add_argument("overrides", nargs="*", help="extra CLI overrides, after --")
    args = parser.parse_args()
    for method in args.methods:
        rows = run(args.benchmark, method, args.epochs, args.overrides)
        path = append_rows("digits", rows)
        print(f"{method}: " + ", ".join(f"{r['metric']}={r['value']}" for r in rows), "->", Path(path).name,
              flush=True)


if __name__ == "__main__":
    main()
