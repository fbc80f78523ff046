"""Online test-time adaptation suite: every online method with a recipe under ``recipes/tta/<benchmark>/`` on
its stream (the 15 ImageNet-C corruptions at severity 5, GENERATED HERE from real test images with
``sfda.data.corruptions``; not MNIST-C), in ``reset_each_shift`` and ``continual``, and, with ``--settings``,
``gradual`` and ``correlated`` (continual with Dirichlet-correlated labels); and the medical stream
(``artifacts_itk``: the Colin27 UNet on the ITK head's slices under MR scanner artifacts, Dice per domain).
Rows: the average online error (Dice for the medical stream; mean and standard deviation over seeds, each
seed's value and its per-domain values stored). ``--speed`` instead runs every method once, one after the
other in one invocation on the same stream (run it on a quiet machine), and writes images per second and the
peak resident memory of each.

    python benchmarks/tta.py                                              # all benchmarks, methods, seeds
    python benchmarks/tta.py --benchmarks corrupted_mnist --methods tent --seeds 0
    python benchmarks/tta.py --subset 2000       # 2,000 images per domain (named in every row's notes)
    python benchmarks/tta.py --speed --benchmarks corrupted_mnist --subset 1000

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
    "artifacts_itk": ("Colin27 UNet on the ITK head under MR scanner artifacts (MONAI, generated here)",
                      ("recipes/segmentation/colin27_itk/source.yaml",
                       "runs/segmentation/colin27_itk/source.pt")),
}
HEADLINES = {"artifacts_itk": "dice"}  # else error
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


def headline(benchmark: str) -> str:
    return HEADLINES.get(benchmark, "error")


def measured(benchmark: str, method: str, setting: str, seed: int, subset: int | None, reuse: bool,
             folder: Path | None = None):
    folder = folder or RUNS / benchmark / setting / method / f"seed{seed}"
    extra = [f"--data.init_args.source.init_args.subset={subset}"] if subset else []
    return (reuse and finished_run(folder, f"online/{headline(benchmark)}")) or run_cli(
        "fit", f"recipes/tta/{benchmark}/{method}.yaml", folder, f"--seed_everything={seed}",
        *SETTINGS[setting], *extra)


def samples_of(results: dict) -> int:
    """The images (slices) the stream scored: the sum of its domains' ``samples``."""
    return int(sum(v for k, v in results.items() if k.startswith("online/") and k.endswith("/samples")))


def images_note(benchmark: str, subset: int | None) -> str:
    if benchmark == "artifacts_itk":
        return "every axial slice of the ITK head (2 mm) per domain"
    return f"{subset} images per domain" if subset else "10,000 images per domain"


def severities_note(setting: str) -> str:
    """The severities a setting's stream passes through, as the rows' notes say it."""
    return "severities 1, 2, 3, 4, 5, 4, 3, 2, 1 of each corruption" if setting == "gradual" else "severity 5"


def accuracy_rows(benchmark: str, method: str, setting: str, runs: list[tuple[dict, float]],
                  subset: int | None) -> list[dict]:
    name, _ = BENCHMARKS[benchmark]
    metric = headline(benchmark)
    values = [r[f"online/{metric}"] for r, _ in runs]
    spread = {"std": round(statistics.stdev(values), 4)} if len(values) > 1 else {}
    how = f"mean and sample standard deviation over {len(values)} seeds" if spread else "one run"
    domains = [{k.split("/")[1]: round(v, 4) for k, v in r.items()
                if k.startswith("online/") and k.endswith(f"/{metric}") and k.count("/") == 2}
               for r, _ in runs]
    what = "Dice pooled over each domain's pixels, averaged over" if metric == "dice" else \
        "average online error over"
    return [row(name, setting, method, f"online-{metric}", statistics.mean(values), sum(s for _, s in runs),
                run=runs[0][0], seeds=[round(v, 4) for v in values], domains=domains, **spread,
                notes=f"{what} the {int(runs[0][0]['online/domains'])} domains, {severities_note(setting)}, "
                      f"{images_note(benchmark, subset)}; {how}")]


def speed_rows(benchmark: str, method: str, results: dict, seconds: float, subset: int | None) -> list[dict]:
    name, _ = BENCHMARKS[benchmark]
    setting = "speed, continual, seed 0"
    return [
        row(name, setting, method, "images-per-s", samples_of(results) / results["timing/epoch_s"], seconds,
            run=results, notes=f"stream images predicted and adapted per second of the training pass (2 CPU "
                               f"threads, corruption on the fly included; {images_note(benchmark, subset)}); "
                               "every method of the benchmark run one after the other in one invocation"),
        row(name, setting, method, "peak-memory-mib", results["run/peak_rss_mib"], seconds, run=results,
            notes="peak resident memory of the sfda fit process (same invocation)"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS))
    parser.add_argument("--methods", nargs="+", default=None, help="default: every recipe of the benchmark")
    parser.add_argument("--settings", nargs="+", default=["reset_each_shift", "continual"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--subset", type=int, default=None, help="images per domain (default all 10,000)")
    parser.add_argument("--speed", action="store_true", help="images/s and peak memory, one run per method")
    parser.add_argument("--reuse-finished", action="store_true")
    args = parser.parse_args()
    for benchmark in args.benchmarks:
        ensure_source(benchmark)
        methods = [m for m in args.methods or methods_of(benchmark)
                   if (ROOT / "recipes" / "tta" / benchmark / f"{m}.yaml").is_file()]
        if args.speed:
            for method in methods:
                folder = RUNS / benchmark / "speed" / method
                results, seconds = measured(benchmark, method, "continual", 0, args.subset, False, folder)
                path = append_rows("tta", speed_rows(benchmark, method, results, seconds, args.subset))
                print(path, benchmark, "speed", method, flush=True)
            continue
        for setting in args.settings:
            for method in methods:
                seeds = args.seeds[:1] if method in DETERMINISTIC else args.seeds
                runs = [measured(benchmark, method, setting, seed, args.subset, args.reuse_finished)
                        for seed in seeds]
                path = append_rows("tta", accuracy_rows(benchmark, method, setting, runs, args.subset))
                print(path, benchmark, setting, method, flush=True)


if __name__ == "__main__":
    Path(RUNS).mkdir(parents=True, exist_ok=True)
    main()
