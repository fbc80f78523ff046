"""The same runs on the code before and after a change: target results must stay within seed noise.

    python benchmarks/results_unchanged.py --before PATH_TO_CHECKOUT --label "issue 33" [--epochs 2]

Runs SHOT and NRC on SVHN -> MNIST (``recipes/digits/svhn_mnist``, cut to ``--epochs``) once from the
checkout at ``--before`` (its own code and recipes; a ``git worktree`` of the older commit) and once from
this tree, one after the other, seed 0 both. Rows to ``results/speed.json``, setting
``results before / after <label>``: MNIST test accuracy, epoch seconds and peak memory of each run, each
row naming the commit that ran.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import ROOT, append_rows, row, run_cli

RECIPES = {"SHOT": "recipes/digits/svhn_mnist/shot.yaml", "NRC": "recipes/digits/svhn_mnist/nrc.yaml"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="a checkout of the code before the change")
    parser.add_argument("--label", required=True, help="the change, named in the rows' setting")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--methods", nargs="+", choices=sorted(RECIPES), default=sorted(RECIPES))
    args = parser.parse_args()
    setting = f"results before / after {args.label}, {args.epochs} epochs, seed 0"
    for method in args.methods:
        for side, tree in (("before", Path(args.before).resolve()), ("after", ROOT)):
            runs = ROOT / "benchmarks" / "runs" / "results_unchanged" / f"{method}_{side}"
            results, seconds = run_cli("fit", RECIPES[method], runs, f"--trainer.max_epochs={args.epochs}",
                                       "--seed_everything=0", tree=tree)
            name = f"{method} ({side})"
            print(f"{name}: acc {results['target/acc']:.4f}, epoch {results['timing/epoch_s']:.0f} s, peak "
                  f"{results['run/peak_rss_mib']:,.0f} MiB", flush=True)
            append_rows("speed", [
                row("svhn->mnist", setting, name, "target-acc", results["target/acc"], seconds, run=results,
                    notes="MNIST test accuracy after the last epoch"),
                row("svhn->mnist", setting, name, "epoch-s", results["timing/epoch_s"], seconds, run=results,
                    notes="mean training-epoch wall time (threads as OMP_NUM_THREADS says)"),
                row("svhn->mnist", setting, name, "peak-rss-mib", results["run/peak_rss_mib"], seconds,
                    run=results, notes="the run's peak resident memory")])


if __name__ == "__main__":
    main()
