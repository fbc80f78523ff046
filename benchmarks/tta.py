"""Online test-time adaptation suite: every online method with a recipe under ``recipes/tta/<benchmark>/`` on
its stream (the 15 ImageNet-C corruptions at severity 5, GENERATED HERE from real test images with
``sfda.data.corruptions``; not MNIST-C), in ``reset_each_shift`` and ``continual``, and, with ``--settings``,
``gradual`` and ``correlated`` (continual with Dirichlet-correlated labels). Rows: the average online error
(mean and standard deviation over seeds; each seed's value and its per-domain errors stored), images per
second and the peak resident memory of the run, measured side by side on this machine.

    python benchmarks/tta.py                                              # all benchmarks, methods, seeds
    python benchmarks/tta.py --benchmarks corrupted_mnist --methods tent --seeds 0
    python benchmarks/tta.py --subset 2000       # 2,000 images per domain (named in every row's notes)

The source models are trained first where missing (MNIST: recipes/digits/mnist_optdigits/source.yaml;
Fashion-MNIST: recipes/tta/corrupted_fashion_mnist/source.yaml); the SVHN model is the ccexam wheel's. The
seed orders the batches (and draws what the method draws); target labels only score.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from common import ROOT, append_rows, finished_run, row, run_cli

BENCHMARKS = {  # folder -> (name in results, source recipe and its artifact, or None)
    "corrupted_mnist": ("MNIST-trained LeNet on corrupted MNIST test (ImageNet-C functions, generated here)",
                        ("recipes/digits/mnist_optdigits/source.yaml", "runs/mnist_optdigits/source.pt")),
    "corrupted_fashion_mnist": ("Fashion-MNIST LeNet on corrupted Fashion-MNIST test (generated here)",
                                ("recipes/tta/corrupted_fashion_mnist/source.yaml",
                                 "runs/tta/fashion_mnist/source.pt")),
    "svhn_corrupted_mnist": ("real SVHN model (ccexam) on corrupted MNIST test (generated here)", None),
}
SETTINGS = {  # name -> overrides
    "reset_each_shift": ["--data.init_args.setting=reset_each_shift"],
    "continual": ["--data.init_args.setting=continual"],
    "gradual": ["--data.init_args.setting=gradual"],
    "correlated": ["--data.init_args.setting=continual", "--data.init_args.label_order=correlated"],
}
DETERMINISTIC = {"source_only"}  # predicts each image alone: the order changes nothing, one run
RUNS = ROOT / "benchmarks" / "runs" / "tta"


def methods_of(benchmark: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "recipes" / "tta" / benchmark).glob("*.yaml") if p.stem != "source")


def ensure_source(benchmark: str) -> None:
    source = BENCHMARKS[benchmark][1]
    if source is not None and not (ROOT / source[1]).is_file():
        run_cli("fit", source[0], RUNS / benchmark / "source")


def measured(benchmark: str, method: str, setting: str, seed: int, subset: int | None, reuse: bool):
    folder = RUNS / benchmark / setting / method / f"seed{seed}"
    extra = [f"--data.init_args.source.init_args.subset={subset}"] if subset else []
    return (reuse and finished_run(folder, "online/error")) or run_cli(
        "fit", f"recipes/tta/{benchmark}/{method}.yaml", folder, f"--seed_everything={seed}",
        *SETTINGS[setting], *extra)


def rows_of(benchmark: str, method: str, setting: str, runs: list[tuple[dict, float]], subset: int | None):
    name, _ = BENCHMARKS[benchmark]
    images = f"{subset} images per domain" if subset else "10,000 images per domain"
    errors = [r["online/error"] for r, _ in runs]
    spread = {"std": round(statistics.stdev(errors), 4)} if len(errors) > 1 else {}
    how = f"mean and sample standard deviation over {len(errors)} seeds" if spread else "one run"
    domains = [{k.split("/")[1]: round(v, 4) for k, v in r.items()
                if k.startswith("online/") and k.endswith("/error") and k.count("/") == 2} for r, _ in runs]
    seconds = sum(s for _, s in runs)
    samples = [r["online/domains"] * (subset or 10000) for r, _ in runs]
    speed = statistics.mean(n / r["timing/epoch_s"] for n, (r, _) in zip(samples, runs, strict=True))
    memory = max(r["run/peak_rss_mib"] for r, _ in runs)
    first = runs[0][0]
    return [
        row(name, setting, method, "online-error", statistics.mean(errors), seconds, run=first,
            seeds=[round(e, 4) for e in errors], domains=domains, **spread,
            notes=f"average online error over the 15 domains, severity 5, {images}; {how}"),
        row(name, setting, method, "images-per-s", speed, seconds, run=first,
            notes="stream images predicted and adapted per second of the training pass (2 CPU threads, batch "
                  "128, corruption on the fly included); mean over seeds"),
        row(name, setting, method, "peak-memory-mib", memory, seconds, run=first,
            notes="peak resident memory of the sfda fit process (the largest over seeds)"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS))
    parser.add_argument("--methods", nargs="+", default=None, help="default: every recipe of the benchmark")
    parser.add_argument("--settings", nargs="+", default=["reset_each_shift", "continual"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--subset", type=int, default=None, help="images per domain (default all 10,000)")
    parser.add_argument("--reuse-finished", action="store_true")
    args = parser.parse_args()
    for benchmark in args.benchmarks:
        ensure_source(benchmark)
        for setting in args.settings:
            for method in args.methods or methods_of(benchmark):
                if not (ROOT / "recipes" / "tta" / benchmark / f"{method}.yaml").is_file():
                    continue
                seeds = args.seeds[:1] if method in DETERMINISTIC else args.seeds
                runs = [measured(benchmark, method, setting, seed, args.subset, args.reuse_finished)
                        for seed in seeds]
                path = append_rows("tta", rows_of(benchmark, method, setting, runs, args.subset))
                print(path, benchmark, setting, method, flush=True)


if __name__ == "__main__":
    Path(RUNS).mkdir(parents=True, exist_ok=True)
    main()
