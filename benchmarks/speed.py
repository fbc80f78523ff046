"""Per-method speed on SVHN->MNIST with the ccexam model (real data, this machine's CPU).

    python benchmarks/speed.py --train-subset 10000

Per method: seconds per adaptation epoch, training images/s and the engine's share of the epoch,
from one `sfda fit` epoch (validation and source-only evaluation off, so the epoch is the method's own
work: engine passes + training steps). The framework's overhead against a faithful reference loop
is measured by ``benchmarks/reference_loop.py``; where an epoch's time goes, by
``benchmarks/profile_epoch.py``.
"""

from __future__ import annotations

import argparse
import json
import os

from common import ROOT, append_rows, row, run_cli

METHODS = {"tent": "tent", "shot": "shot", "shot_im": "shot-im", "nrc": "nrc", "aad": "aad"}
BENCH = "svhn->mnist"
ONE_EPOCH = ["--trainer.max_epochs=1", "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0",
             "--model.init_args.evaluate_source=false"]


def sfda_epoch(method: str, train_subset: int) -> dict:
    results, seconds = run_cli("fit", f"recipes/digits/svhn_mnist/{method}.yaml",
                               ROOT / "benchmarks" / "runs" / "speed" / method, *ONE_EPOCH,
                               f"--data.init_args.train_subset={train_subset}")
    return {**results, "process_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-subset", type=int, default=10000, help="target training images per epoch")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    args = parser.parse_args()
    n = args.train_subset
    setting = f"closed, {n} target images/epoch"
    rows = []
    for method in args.methods:
        r = sfda_epoch(method, n)
        note = (f"one `sfda fit` epoch on {n} MNIST images, no validation; torch threads "
                f"{os.environ.get('OMP_NUM_THREADS', 'default')}")
        rows += [row(BENCH, setting, METHODS[method], "epoch-seconds", r["timing/epoch_s"],
                     r["process_seconds"], run=r, epochs=1, notes=note),
                 row(BENCH, setting, METHODS[method], "images-per-s", r["timing/train_images_per_s"],
                     r["process_seconds"], run=r, epochs=1, notes=note)]
        if "timing/engine_share" in r:
            rows.append(row(BENCH, setting, METHODS[method], "engine-share", r["timing/engine_share"],
                            r["process_seconds"], run=r, epochs=1,
                            notes="engine seconds (pseudo-label passes, clustering, bank writes, kNN) / "
                                  "epoch seconds"))
        print(method, json.dumps({k: round(v, 3) for k, v in r.items() if k.startswith("timing/")}),
              flush=True)
    print(f"-> {append_rows('speed', rows).name}")


if __name__ == "__main__":
    main()
