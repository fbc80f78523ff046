"""Detection suite, every row the mean and standard deviation over seeds (each seed's value stored):

- yell_fog: REAL aerial images (NEON YELL crowns), SYNTHETIC fog (``sfda.data.benchmarks.yell_fog``);
- digits_photos: digits -> digits-on-photos (SEMI-SYNTHETIC, ``sfda.data.benchmarks.digit_detection``);
- yell_osbs: YELL -> OSBS, real, one target tile (transductive).

    python benchmarks/detection.py yell_fog --methods source source_only mean_teacher lpld lpld_weight0
    python benchmarks/detection.py digits_photos --seeds 0 1 2
    python benchmarks/detection.py digits_photos --methods lpld --reuse-finished   # finish what stopped

Every run goes through the real CLI. Target boxes only report: the source checkpoint is chosen on
held-out SOURCE tiles, adaptation reports its last epoch (the teacher after its last EMA update).
Source-only is scored once: its evaluation draws no random numbers, so every seed gives the same value.
"""

from __future__ import annotations

import argparse

from common import ROOT, append_rows, recipe_source, row, run_cli, seed_run, seeded_rows

BENCHMARKS = {"yell_fog": "yell fog (real images, synthetic fog)",
              "digits_photos": "digits->digits-on-photos (semi-synthetic)", "yell_osbs": "yell->osbs"}
METHOD_NAMES = {"source_only": "source-only", "mean_teacher": "mean-teacher", "lpld": "lpld",
                "lpld_weight0": "lpld weight 0 (control)"}
# metric -> (results.json key, note); the target/ keys score the evaluated network (the teacher)
METRICS = {
    "ap50": ("target/ap50", "VOC AP at IoU 0.5, area under the curve, mean over classes"),
    "map": ("target/map", "COCO mAP (IoU 0.5:0.95, torchmetrics)"),
    "student-ap50": ("target_student/ap50", "the student's AP50 (the teacher is what the method reports)"),
    "hpl-precision": ("train/hpl_precision", "last epoch: share of the teacher's confident pseudo-boxes "
                      "with IoU >= 0.5 to a hidden target box (reporting only)"),
    "lpl-precision": ("train/lpl_precision", "last epoch: the same for LPLD's kept low-confidence proposals"),
    "hpl-per-image": ("train/hpl_per_image", "confident pseudo-boxes per image, last step"),
    "epoch-seconds": ("timing/epoch_s", "mean training-epoch wall time, 2 CPU threads"),
}
# a diagnostic of the fog benchmark: the source model on crop 1 WITHOUT fog separates the scene shift
# from the fog's
CLEAN = {"yell_fog": ("source-only, clean crop 1 (diagnostic)",
                      "--data.init_args.eval=[demo://yell_fog/clean_test.json]")}


def run(benchmark: str, method: str, seeds: list[int], reuse: bool = False) -> list[dict]:
    bench = BENCHMARKS[benchmark]
    runs = ROOT / "benchmarks" / "runs" / "detection" / benchmark / method
    recipe = f"recipes/detection/{benchmark}/{method}.yaml"
    if method == "source":  # a benchmark rerun retrains on purpose
        results, seconds = run_cli("fit", recipe, runs, "--model.init_args.overwrite_artifact=true")
        best = results["source_val/best_ap50"]
        return [row(bench, "closed", "source training", "source-ap50", best, seconds,
                    run=results, epochs=int(results["epochs"]),
                    notes="AP50 on held-out SOURCE tiles of the selected epoch (one seed: it only makes "
                          "the model every adaptation row starts from)")]
    if method == "source_only":
        rows = seeded_rows(bench, "closed", METHOD_NAMES[method], [run_cli("test", recipe, runs)], 0, METRICS)
        if benchmark in CLEAN:
            name, override = CLEAN[benchmark]
            rows += seeded_rows(bench, "closed", name, [run_cli("test", recipe, runs / "clean", override)], 0,
                                METRICS)
        return [dict(r, notes=r["notes"].replace("one run", "one run (deterministic: any seed gives it)"))
                for r in rows]
    seeded = [seed_run("detection", bench, method, seed, recipe_source(recipe), runs / f"seed{seed}",
                       "target/ap50", reuse,
                       lambda seed=seed: run_cli("fit", recipe, runs / f"seed{seed}",
                                                 f"--seed_everything={seed}"))
              for seed in seeds]
    return seeded_rows(bench, "closed", METHOD_NAMES[method], seeded, int(seeded[0][0]["epochs"]), METRICS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS))
    parser.add_argument("--methods", nargs="+", default=["source", *METHOD_NAMES],
                        help="in order; 'source' first trains the source model")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--reuse-finished", action="store_true",
                        help="keep a seed's finished run (the newest version under the seed's folder) "
                             "instead of running it again: finish an interrupted benchmark")
    args = parser.parse_args()
    for method in args.methods:
        rows = run(args.benchmark, method, args.seeds, args.reuse_finished)
        path = append_rows("detection", rows)
        values = [f"{r['metric']}={r['value']}" + (f"+-{r['std']}" if "std" in r else "") for r in rows]
        print(f"{method}: " + ", ".join(values), "->", path.name, flush=True)


if __name__ == "__main__":
    main()
