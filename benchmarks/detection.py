"""Detection suite: yell->osbs (real NEON tree crowns, DeepForest's data) and the SEMI-SYNTHETIC
digits->digits-on-photos benchmark (``sfda.data.benchmarks.digit_detection``).

    python benchmarks/detection.py digits_photos --methods source source_only mean_teacher lpld
    python benchmarks/detection.py yell_osbs --methods source source_only mean_teacher lpld

Every method runs through the real CLI. Target boxes are used only for the reported AP; the
source checkpoint is chosen on held-out SOURCE images; adaptation reports the last epoch.
"""

from __future__ import annotations

import argparse

from common import ROOT, append_rows, row, run_cli

BENCHMARKS = {"digits_photos": "digits->digits-on-photos (semi-synthetic)", "yell_osbs": "yell->osbs"}
METHOD_NAMES = {"source_only": "source-only", "mean_teacher": "mean-teacher", "lpld": "lpld"}
METRICS = {
    "ap50": "VOC AP at IoU 0.5, area under the curve, mean over classes",
    "ap50_11pt": "VOC07 11-point AP at IoU 0.5",
    "map": "COCO mAP (IoU 0.5:0.95, torchmetrics)",
}
COUNTS = ("train/hpl_per_image", "train/lpl_candidates", "train/lpl_kept")


def run(benchmark: str, method: str) -> list[dict]:
    bench = BENCHMARKS[benchmark]
    runs = ROOT / "benchmarks" / "runs" / "detection" / benchmark / method
    recipe = f"recipes/detection/{benchmark}/{method}.yaml"
    if method == "source":  # a benchmark rerun retrains on purpose
        results, seconds = run_cli("fit", recipe, runs, "--model.init_args.overwrite_artifact=true")
        return [
            row(
                bench,
                "closed",
                "source training",
                "source-ap50",
                results["source_val/best_ap50"],
                seconds,
                run=results,
                epochs=int(results["epochs"]),
                notes="AP50 on held-out SOURCE images of the selected epoch",
            )
        ]
    results, seconds = run_cli("test" if method == "source_only" else "fit", recipe, runs)
    epochs = 0 if method == "source_only" else int(results["epochs"])
    name = METHOD_NAMES[method]
    rows = [
        row(
            bench,
            "closed",
            name,
            metric,
            results[f"target/{metric}"],
            seconds,
            run=results,
            epochs=epochs,
            notes=note,
        )
        for metric, note in METRICS.items()
    ]
    if epochs:
        counts = {k.split("/")[1]: round(results[k], 2) for k in COUNTS if k in results}
        rows += [
            row(
                bench,
                "closed",
                name,
                "epoch-seconds",
                results["timing/epoch_s"],
                seconds,
                run=results,
                epochs=epochs,
                notes=f"mean training-epoch wall time, 2 CPU threads; last-step counts {counts}",
            ),
            row(
                bench,
                "closed",
                name,
                "train-images-per-s",
                results["timing/train_images_per_s"],
                seconds,
                run=results,
                epochs=epochs,
                notes="teacher pass + student step, 2 CPU threads",
            ),
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS))
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["source", *METHOD_NAMES],
        help="in order; 'source' first trains the source model",
    )
    args = parser.parse_args()
    for method in args.methods:
        rows = run(args.benchmark, method)
        path = append_rows("detection", rows)
        print(
            f"{method}: " + ", ".join(f"{r['metric']}={r['value']}" for r in rows),
            "->",
            path.name,
            flush=True,
        )


if __name__ == "__main__":
    main()
