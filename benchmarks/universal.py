"""Universal-DA suite: H-score (PDA: accuracy) of source-only, SHOT-O / SHOT and GLC per setting.

    python benchmarks/universal.py svhn_mnist_opda --methods source_only shot_o glc
    python benchmarks/universal.py mnist06_optdigits --methods source source_only shot_o glc

Each method runs through the real CLI on the full target set; the target's labelled test split
(same class split) is used only for the reported scores; the last epoch is reported.
"""

from __future__ import annotations

import argparse

from common import ROOT, append_rows, row, run_cli

BENCHMARKS = {"svhn_mnist_opda": ("svhn->mnist", "opda"), "svhn_mnist_osda": ("svhn->mnist", "osda"),
              "svhn_mnist_pda": ("svhn->mnist", "pda"), "mnist06_optdigits": ("mnist(0-5)->optdigits",
                                                                              "osda")}
METHOD_NAMES = {"source_only": "source-only", "shot_o": "shot-o", "shot": "shot", "glc": "glc"}
REPORTED = {"acc": "acc", "acc_per_class": "acc-per-class", "h_score": "h-score", "known_acc": "known-acc",
            "unknown_acc": "unknown-acc"}


def run(benchmark: str, method: str, epochs: int | None) -> list[dict]:
    bench, setting = BENCHMARKS[benchmark]
    runs = ROOT / "benchmarks" / "runs" / "universal" / benchmark / method
    recipe = f"recipes/universal/{benchmark}/{method}.yaml"
    if method == "source":  # a benchmark rerun retrains on purpose
        results, seconds = run_cli("fit", recipe, runs, "--model.init_args.overwrite_artifact=true")
        return [row(bench, setting, "source training", "source-val-acc", results["source_val/best_acc"],
                    seconds, run=results, epochs=int(results["epochs"]),
                    notes="held-out 10% of the SOURCE train split (classes 0-5)")]
    overrides = [f"--trainer.max_epochs={epochs}"] if epochs and method != "source_only" else []
    results, seconds = run_cli("test" if method == "source_only" else "fit", recipe, runs, *overrides)
    n_epochs = 0 if method == "source_only" else int(results["epochs"])
    rows = [row(bench, setting, METHOD_NAMES[method], name, results[f"target/{key}"], seconds, run=results,
                epochs=n_epochs)
            for key, name in REPORTED.items() if f"target/{key}" in results]
    if n_epochs:
        rows.append(row(bench, setting, METHOD_NAMES[method], "epoch-seconds", results["timing/epoch_s"],
                        seconds, run=results, epochs=n_epochs,
                        notes="mean training-epoch wall time incl. engine passes and validation"))
    if "engine/glc_clusters" in results:
        rows[0]["notes"] = f"GLC chose {int(results['engine/glc_clusters'])} target clusters by silhouette"
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS))
    parser.add_argument("--methods", nargs="+", default=["source_only", "shot_o", "glc"],
                        help="in order; 'source' first trains the source model (mnist06_optdigits)")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's max_epochs")
    args = parser.parse_args()
    for method in args.methods:
        rows = run(args.benchmark, method, args.epochs)
        path = append_rows("universal", rows)
        print(f"{method}: " + ", ".join(f"{r['metric']}={r['value']}" for r in rows), "->", path.name,
              flush=True)


if __name__ == "__main__":
    main()
