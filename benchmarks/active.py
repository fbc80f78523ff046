"""Source-free active DA suite: SVHN->MNIST with the ccexam model, 10 rounds, 1% and 5% budgets.

    python benchmarks/active.py --budgets 5 --methods lftl lftl_no_vpa random entropy margin shot

Each run goes through the real CLI with the recipe of (method, budget); the benchmark annotator
reveals stored MNIST train labels only for queried samples; MNIST test is used only for the
reported accuracy (the last epoch of the last round; nothing is selected on it).
Compute deviation (written into every row's notes): the pool is a fixed seeded subset of MNIST
train (--pool, default 10,000) and each round trains --epochs-per-round epochs (default 1)
instead of the recipe's full 60k x 10 epochs, which would take ~6 h per run on 2 CPU cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import ROOT, append_rows, row, run_cli

BENCHMARK = "svhn->mnist"
METHOD_NAMES = {"lftl": "lftl", "lftl_no_vpa": "lftl-no-vpa", "random": "random", "entropy": "entropy",
                "margin": "margin"}


def active_run(method: str, budget: int, pool: int, epochs_per_round: int) -> list[dict]:
    recipe = f"recipes/active/svhn_mnist/{method}_{budget}pct.yaml"
    runs = ROOT / "benchmarks" / "runs" / "active" / f"{method}_{budget}pct"
    results, seconds = run_cli("fit", recipe, runs, f"--data.init_args.train_subset={pool}",
                               f"--model.init_args.epochs_per_round={epochs_per_round}",
                               f"--trainer.max_epochs={10 * epochs_per_round}")
    rounds = sorted(int(k.split("/")[0].split("_")[1]) for k in results if k.startswith("round_")
                    and k.endswith("/target/acc"))
    per_round = [round(results[f"round_{r}/target/acc"], 4) for r in rounds]
    round_seconds = [results[f"round_{r}/seconds"] for r in rounds if f"round_{r}/seconds" in results]
    notes = (f"pool: {pool} MNIST train images (seeded subset), 10 rounds x {epochs_per_round} epochs "
             f"(recipe: 60k x 10; compute deviation); {int(results['round_10/labelled'])} labels in total")
    setting, name = f"budget-{budget}%", METHOD_NAMES[method]
    extra = dict(run=results, epochs=int(results["epochs"]), notes=notes)
    return [row(BENCHMARK, setting, name, "acc", results["target/acc"], seconds, rounds=per_round, **extra),
            row(BENCHMARK, setting, name, "acc-per-class", results["target/acc_per_class"], seconds, **extra),
            row(BENCHMARK, setting, name, "round-seconds", sum(round_seconds) / len(round_seconds), seconds,
                **{**extra, "notes": "mean wall seconds per round (query pass + training epochs + "
                                     "validation); " + notes})]


def shot_reference(pool: int, epochs: int) -> list[dict]:
    """SHOT (0% budget) on the same pool and the same number of epochs over it."""
    runs = ROOT / "benchmarks" / "runs" / "active" / "shot"
    results, seconds = run_cli("fit", "recipes/digits/svhn_mnist/shot.yaml", runs,
                               f"--data.init_args.train_subset={pool}", f"--trainer.max_epochs={epochs}")
    notes = (f"pool: {pool} MNIST train images (seeded subset), {epochs} epochs = the active runs' epochs; "
             "no labels")
    extra = dict(run=results, epochs=int(results["epochs"]), notes=notes)
    return [row(BENCHMARK, "budget-0%", "source-only", "acc", results["source_only/acc"], 0.0, run=results,
                epochs=0),
            row(BENCHMARK, "budget-0%", "shot", "acc", results["target/acc"], seconds, **extra),
            row(BENCHMARK, "budget-0%", "shot", "acc-per-class", results["target/acc_per_class"], seconds,
                **extra)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", nargs="+", type=int, default=[1, 5], choices=[1, 5])
    parser.add_argument("--methods", nargs="+", default=[*METHOD_NAMES, "shot"],
                        choices=[*METHOD_NAMES, "shot"])
    parser.add_argument("--pool", type=int, default=10_000,
                        help="target pool size (seeded subset of MNIST train)")
    parser.add_argument("--epochs-per-round", type=int, default=1)
    args = parser.parse_args()
    for method in args.methods:
        if method == "shot":
            rows = shot_reference(args.pool, 10 * args.epochs_per_round)
            print("shot:", ", ".join(f"{r['method']} {r['metric']}={r['value']}" for r in rows), flush=True)
            append_rows("active", rows)
            continue
        for budget in args.budgets:
            rows = active_run(method, budget, args.pool, args.epochs_per_round)
            path = append_rows("active", rows)
            print(f"{method} {budget}%: " + ", ".join(f"{r['metric']}={r['value']}" for r in rows), "->",
                  Path(path).name, flush=True)


if __name__ == "__main__":
    main()
