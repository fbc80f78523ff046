"""Choosing without target labels: how well each label-free validator picks a checkpoint.

    python benchmarks/selection.py mnist_optdigits optdigits_mnist [--methods shot nrc aad]

For each benchmark and method, a grid of 3 learning rates (the recipe's x 0.3, 1, 3) x 3 values of
the method's main weight x 2 seeds runs through the real CLI with the recipe's own schedule,
validating every epoch: every epoch's weights are one checkpoint (the validators and, for reporting
only, the target accuracy are logged at each validation; no checkpoint files are kept). Per
validator we report, over all checkpoints of a (benchmark, method):

- ``wspearman``: weighted Spearman correlation of the validator (signed so higher = better) with
  target accuracy. Weights emphasise the best checkpoints, after Musgrave et al. (2022): w_i =
  (accuracy rank_i / N)^2, rank N = best; their exact weighting may differ.
- ``pick-acc``: the target accuracy of the checkpoint the validator picks; ``regret``: the oracle's
  pick (target labels, reporting only) minus it, in points.
- ``vs-default``: ``pick-acc`` minus the default recipe's last epoch (lr x 1, the recipe's weight,
  seed 0), in points.

Rows go to ``benchmarks/results/selection.json``; every checkpoint's scores to
``benchmarks/results/selection_checkpoints/<benchmark>.json``; one scatter plot per benchmark to
``benchmarks/results/selection_<benchmark>.png``. Runs already done are read back, not rerun.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import RESULTS, ROOT, append_rows, row, run_cli

from sfda.metrics.validators import VALIDATORS

BENCHMARKS = {
    "mnist_optdigits": ("mnist->optdigits", []),
    "optdigits_mnist": ("optdigits->mnist", ["--data.init_args.train_subset=10000"]),
    # 5k of the 60k MNIST train images as the target, 2k of the 10k test images for validation and
    # (reporting only) accuracy: the 54 runs of 10 epochs then fit in about 2 hours on 2 CPU cores.
    "svhn_mnist": ("svhn->mnist",
                   ["--data.init_args.train_subset=5000", "--data.init_args.eval_subset=2000"]),
}
WEIGHTS = {  # the method's main weight and its grid; the default is the recipe's value (recipe_weight)
    "shot": ("beta", (0.1, 0.3, 0.5)),
    "nrc": ("expanded_weight", (0.05, 0.1, 0.2)),
    "aad": ("alpha", (0.5, 1.0, 2.0)),
}
LR_FACTORS, SEEDS = (0.3, 1.0, 3.0), (0, 1)
USED = [name for name, v in VALIDATORS.items() if v.needs in ("probs", "features", "strong")]


def recipe_model(benchmark: str, method: str) -> dict:
    """The ``model`` section (``class_path``, ``init_args``) of the benchmark's recipe."""
    import yaml

    recipe = yaml.safe_load((ROOT / "recipes" / "digits" / benchmark / f"{method}.yaml").read_text())
    return recipe["model"]


def recipe_args(benchmark: str, method: str) -> dict:
    return recipe_model(benchmark, method)["init_args"]


def recipe_lr(benchmark: str, method: str) -> float:
    return float(recipe_args(benchmark, method)["optim"]["lr"])


def recipe_weight(benchmark: str, method: str) -> float:
    """The default recipe's main weight: the recipe's value, else the method's own default."""
    import inspect

    from sfda.methods import NRC, SHOT, AaD

    name, model = WEIGHTS[method][0], recipe_model(benchmark, method)
    if name in model["init_args"]:
        return float(model["init_args"][name])
    cls = {"shot": SHOT, "nrc": NRC, "aad": AaD}[method]
    return float(inspect.signature(cls).parameters[name].default)


def epochs_of(run_dir) -> list[dict]:
    """Per validation: epoch, target/acc and every label-free value, from the run's metrics.csv."""
    out = []
    for r in csv.DictReader(open(run_dir / "metrics.csv")):
        if r.get("target/acc") and r.get("label_free/entropy"):
            out.append(
                {
                    "epoch": int(r["epoch"]),
                    "acc": float(r["target/acc"]),
                    **{n: float(r[f"label_free/{n}"]) for n in USED if r.get(f"label_free/{n}")},
                }
            )
    return out


def stored_runs(benchmark: str) -> list[dict]:
    """The runs already recorded in ``selection_checkpoints/<benchmark>.json`` (earlier sessions' too)."""
    path = RESULTS / "selection_checkpoints" / f"{benchmark}.json"
    return json.loads(path.read_text()) if path.exists() else []


def grid_points(benchmark: str, method: str) -> list[tuple[str, Path, list[str], bool]]:
    """``(name, run root, CLI overrides, is the default recipe)`` of every grid point."""
    weight_name, weights = WEIGHTS[method]
    base_lr, default_weight = recipe_lr(benchmark, method), recipe_weight(benchmark, method)
    points = []
    for factor in LR_FACTORS:
        for weight in weights:
            for seed in SEEDS:
                name = f"lr{factor:g}_{weight_name}{weight:g}_seed{seed}"
                overrides = [*BENCHMARKS[benchmark][1], f"--model.init_args.optim.lr={base_lr * factor}",
                             f"--model.init_args.{weight_name}={weight}", f"--seed_everything={seed}",
                             "--trainer.check_val_every_n_epoch=1", "--data.init_args.eval_strong_view=true",
                             "--report_evidence=false"]
                root = ROOT / "benchmarks" / "runs" / "selection" / benchmark / method / name
                default = factor == 1.0 and weight == default_weight and seed == 0
                points.append((name, root, overrides, default))
    return points


def grid_runs(benchmark: str, method: str, jobs: int = 1, extra: tuple[str, ...] = ()) -> list[dict]:
    """Every grid point's checkpoints: read back when recorded, run otherwise (``jobs`` at a time, each
    with the ``extra`` CLI overrides, e.g. an accelerator)."""
    recorded = {r["run"]: r for r in stored_runs(benchmark) if r["method"] == method}
    points = grid_points(benchmark, method)
    missing = [(root, overrides) for name, root, overrides, _ in points
               if name not in recorded and not (root / "version_0" / "results.json").exists()]
    recipe = f"recipes/digits/{benchmark}/{method}.yaml"
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # each run is its own process
        list(pool.map(lambda job: run_cli("fit", recipe, job[0], *job[1], *extra), missing))
    out = []
    for name, root, _, default in points:
        done = root / "version_0" / "results.json"
        if name in recorded and not done.exists():
            out.append({**recorded[name], "default": default})  # the flag as the recipe says now
            continue
        results = json.loads(done.read_text())
        out.append({"benchmark": BENCHMARKS[benchmark][0], "method": method, "run": name, "default": default,
                    "seconds": results.get("wall_s", 0.0), "commit": results.get("run/git_commit"),
                    "checkpoints": epochs_of(root / "version_0")})
        print(f"{out[-1]['benchmark']} {method} {name}: last acc {out[-1]['checkpoints'][-1]['acc']:.4f}",
              flush=True)
    return out


def weighted_spearman(scores: list[float], accuracy: list[float]) -> float:
    """Weighted Pearson correlation of the ranks; weight (accuracy rank / N)^2 (rank N = best)."""
    from scipy.stats import rankdata

    n = len(scores)
    rs, ra = rankdata(scores), rankdata(accuracy)
    w = (ra / n) ** 2
    mean_s, mean_a = (w * rs).sum() / w.sum(), (w * ra).sum() / w.sum()
    cov = (w * (rs - mean_s) * (ra - mean_a)).sum()
    var = math.sqrt((w * (rs - mean_s) ** 2).sum() * (w * (ra - mean_a) ** 2).sum())
    return float(cov / var) if var > 0 else float("nan")


def analyse(runs: list[dict]) -> list[dict]:
    """The rows of one (benchmark, method) grid."""
    checkpoints = [c for r in runs for c in r["checkpoints"]]
    accuracy = [c["acc"] for c in checkpoints]
    oracle = max(accuracy)
    default_run = next(r for r in runs if r["default"])
    default = default_run["checkpoints"][-1]["acc"]
    bench, method = runs[0]["benchmark"], runs[0]["method"]
    seconds = sum(r["seconds"] for r in runs)
    commit = next((r["commit"] for r in runs if r["commit"]), None)
    note = f"{len(runs)} runs x {len(runs[0]['checkpoints'])} epochs = {len(checkpoints)} checkpoints"
    rows = [
        row(
            bench,
            "selection",
            f"{method}/oracle",
            "pick-acc",
            oracle,
            seconds,
            run={"run/git_commit": commit},
            notes="UPPER BOUND: the checkpoint target labels pick (reporting only); " + note,
        ),
        row(
            bench,
            "selection",
            f"{method}/default-last-epoch",
            "pick-acc",
            default,
            seconds,
            run={"run/git_commit": commit},
            notes="the default recipe's last epoch (lr x 1, default weight, seed 0)",
        ),
    ]
    for name in USED:
        if any(name not in c for c in checkpoints):
            continue
        sign = 1.0 if VALIDATORS[name].mode == "max" else -1.0
        signed = [sign * c[name] for c in checkpoints]
        pick = checkpoints[max(range(len(signed)), key=signed.__getitem__)]["acc"]
        label = f"{method}/{name}"
        extra = {"run": {"run/git_commit": commit}}
        rows += [
            row(
                bench, "selection", label, "wspearman", weighted_spearman(signed, accuracy), seconds, **extra
            ),
            row(bench, "selection", label, "pick-acc", pick, seconds, **extra),
            row(
                bench,
                "selection",
                label,
                "regret",
                100 * (oracle - pick),
                seconds,
                **extra,
                notes="points below the oracle's pick",
            ),
            row(
                bench,
                "selection",
                label,
                "vs-default",
                100 * (pick - default),
                seconds,
                **extra,
                notes="points above the default recipe's last epoch",
            ),
        ]
    return rows


def scatter(benchmark: str, grids: list[list[dict]]) -> None:
    """One panel per validator: its value vs target accuracy over every checkpoint, a colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(USED), figsize=(3.2 * len(USED), 3.0), squeeze=False)
    for ax, name in zip(axes[0], USED, strict=True):
        for runs in grids:
            points = [(c[name], c["acc"]) for r in runs for c in r["checkpoints"] if name in c]
            if points:
                ax.scatter(*zip(*points, strict=True), s=6, alpha=0.6, label=runs[0]["method"])
        ax.set_xlabel(f"{name} ({VALIDATORS[name].mode} is better)")
        ax.set_ylabel("target accuracy (reporting only)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{BENCHMARKS[benchmark][0]}: label-free validators vs target accuracy, every checkpoint")
    fig.tight_layout()
    fig.savefig(RESULTS / f"selection_{benchmark}.png", dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("benchmarks", nargs="*", help=f"any of {sorted(BENCHMARKS)}")
    parser.add_argument("--methods", nargs="+", default=list(WEIGHTS), choices=list(WEIGHTS))
    parser.add_argument("--summary", action="store_true", help="only print the per-validator summary")
    parser.add_argument("--jobs", type=int, default=1, help="grid runs at a time")
    parser.add_argument("--extra", action="append", default=[], help="a CLI override for every run "
                        "(repeatable), e.g. --extra=--trainer.accelerator=gpu")
    args = parser.parse_args()
    unknown = sorted(set(args.benchmarks) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; expected any of {sorted(BENCHMARKS)}")
    if args.summary:
        for line in summary():
            print(line)
        return
    for benchmark in args.benchmarks:
        for method in args.methods:
            runs = grid_runs(benchmark, method, args.jobs, tuple(args.extra))
            append_rows("selection", analyse(runs))
            path = RESULTS / "selection_checkpoints" / f"{benchmark}.json"
            path.parent.mkdir(exist_ok=True)
            stored = [r for r in stored_runs(benchmark) if r["method"] != method] + runs
            path.write_text(json.dumps(stored, indent=0))
        every = stored_runs(benchmark)  # every method measured so far, this invocation's or not
        methods = dict.fromkeys(r["method"] for r in every)
        scatter(benchmark, [[r for r in every if r["method"] == m] for m in methods])



def summary() -> list[dict]:
    """Per validator over every measured (benchmark, method): worst and mean regret, worst vs-default, mean
    wspearman; the smallest worst regret first (ties: the smaller mean regret)."""
    rows = json.loads((RESULTS / "selection.json").read_text())
    out = []
    for name in USED:
        mine = [r for r in rows if r["method"].endswith(f"/{name}")]
        if not mine:
            continue
        names = ("regret", "vs-default", "wspearman")
        metric = {m: [r["value"] for r in mine if r["metric"] == m] for m in names}
        out.append({"validator": name, "cases": len(metric["regret"]), "worst_regret": max(metric["regret"]),
                    "mean_regret": sum(metric["regret"]) / len(metric["regret"]),
                    "worst_vs_default": min(metric["vs-default"]),
                    "mean_wspearman": sum(metric["wspearman"]) / len(metric["wspearman"])})
    return sorted(out, key=lambda r: (round(r["worst_regret"], 6), r["mean_regret"]))


if __name__ == "__main__":
    main()
