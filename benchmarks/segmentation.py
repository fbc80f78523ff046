"""Segmentation suite on the real skull-stripping demo volumes: Colin27 <-> the ITK subject.

    python benchmarks/segmentation.py colin27_itk --methods source source_only adabn tent entropy \
        entropy_prior_estimated entropy_prior_source_sizes entropy_prior_csv entropy_prior_constant \
        entropy_prior_true oracle
    python benchmarks/segmentation.py colin27_itk_3d --methods source source_only adabn entropy \
        entropy_prior_estimated entropy_prior_source_sizes oracle --seeds 0 1 2
    python benchmarks/segmentation.py colin27_robex_3d --methods source_only adabn entropy \
        entropy_prior_estimated oracle --seeds 0 1 2

With ``--seeds`` every row but source-only's and source training's is the mean and sample standard
deviation over the seeds (each seed's value kept): a seed changes the fixed patches a 3-D run draws and the
batch order. One source model per source volume (seed 0); the ``*_robex_3d`` benchmarks reuse the source model
of ``colin27_itk_3d`` / ``itk_colin27_3d`` and have no ``source`` method of their own.

The ``_3d`` benchmarks (rows with setting ``3d``) train a 3-D UNet on patches and evaluate by 3-D
sliding-window inference; their recipes are in ``recipes/segmentation/<benchmark>_3d/``.

Every method runs through the real CLI; the target volume's brain mask is used only for the
reported Dice / HD95 (and, named as such, by the weak-label tags of entropy+prior(constant) and
by the upper-bound entropy+prior(true)). The last epoch is reported.
"""

from __future__ import annotations

import argparse
import csv

from common import ROOT, append_rows, row, run_cli, seeded_rows

BENCHMARKS = {"colin27_itk": ("colin27->itk", "colin27", "itk", "closed"),
              "itk_colin27": ("itk->colin27", "itk", "colin27", "closed"),
              "colin27_itk_3d": ("colin27->itk", "colin27", "itk", "3d"),
              "itk_colin27_3d": ("itk->colin27", "itk", "colin27", "3d"),
              "colin27_robex_3d": ("colin27->robex", "colin27", "robex", "3d"),
              "itk_robex_3d": ("itk->robex", "itk", "robex", "3d")}
INFERENCE = {"closed": "slice-by-slice sliding-window inference of the whole target volume, 1 CPU thread",
             "3d": "3-D sliding-window inference (window 48^3, overlap 0.25, Gaussian blending) of the whole "
                   "target volume, 1 CPU thread"}
METHOD_NAMES = {"source_only": "source-only", "adabn": "adabn", "tent": "tent", "entropy": "entropy",
                "entropy_prior_estimated": "entropy+prior(estimated)",
                "entropy_prior_constant": "entropy+prior(constant)",
                "entropy_prior_source_sizes": "entropy+prior(source sizes)",
                "entropy_prior_csv": "entropy+prior(csv)", "entropy_prior_true": "entropy+prior(true)",
                "oracle": "oracle"}
NOTES = {"entropy_prior_constant": "tags (brain present in slice?) are weak labels from the target mask; "
                                   "size from the source volume",
         "entropy_prior_source_sizes": "label-free: size from the source volume's labels, tags from the "
                                       "source model's predictions",
         "entropy_prior_csv": "label-free: a per-slice sizes CSV written from the source model's predicted "
                              "masks (ImageSizes)",
         "entropy_prior_true": "UPPER BOUND: true per-slice class ratios from the target mask",
         "oracle": "UPPER BOUND: UNet trained with the target labels on the target volume, evaluated on it"}


def write_tags(benchmark: str) -> None:
    """The image-level tags CSV of the constant-size prior (``id,brain``), from the target mask (weak
    labels)."""
    from sfda.data import SegmentationDataModule
    from sfda.models import load_artifact

    target = BENCHMARKS[benchmark][2]
    artifact = load_artifact(ROOT / "runs" / "segmentation" / benchmark / "source.pt")
    dm = SegmentationDataModule(f"demo://skull_stripping/{target}.json", artifact.class_names, role="target",
                                input=artifact.input)
    dataset = dm.dataset("train", with_labels=True)
    path = ROOT / "runs" / "segmentation" / benchmark / f"{target}_tags.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "brain"])
        for i in range(len(dataset)):
            writer.writerow([dataset.ids[i], int(bool((dataset[i]["label"] > 0).any()))])


def write_source_sizes(benchmark: str) -> None:
    """The per-slice sizes CSV of ``entropy_prior_csv`` (``id,brain``): the brain fraction of the
    source model's own predicted mask in every target slice (label-free)."""
    import torch

    from sfda.data import SegmentationDataModule
    from sfda.models import load_artifact
    from sfda.pseudo_labels import class_fractions

    target = BENCHMARKS[benchmark][2]
    artifact = load_artifact(ROOT / "runs" / "segmentation" / benchmark / "source.pt")
    network = artifact.build_network().eval()
    dm = SegmentationDataModule(f"demo://skull_stripping/{target}.json", artifact.class_names, role="target",
                                input=artifact.input)
    path = ROOT / "runs" / "segmentation" / benchmark / f"{target}_source_sizes.csv"
    ids = dm.sample_ids()
    with torch.no_grad(), open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", *artifact.class_names[1:]])
        for batch in dm.bank_dataloader():
            fractions = class_fractions(network(batch["image"]).argmax(1), artifact.num_classes)
            for index, row_fractions in zip(batch["index"].tolist(), fractions[:, 1:].tolist(), strict=True):
                writer.writerow([ids[index], *(f"{f:.6f}" for f in row_fractions)])


def run(benchmark: str, method: str, lr: float | None = None, seeds: list[int] | None = None) -> list[dict]:
    """Rows of one method; ``lr`` overrides the recipe's adaptation lr (rows get setting ``lr-<lr>``);
    ``seeds``: one run per seed, rows the mean and standard deviation (None: the recipe's seed, one run)."""
    bench, base_setting = BENCHMARKS[benchmark][0], BENCHMARKS[benchmark][3]
    setting = (base_setting if lr is None
               else f"lr-{lr:g}" + ("" if base_setting == "closed" else f"-{base_setting}"))
    runs = (ROOT / "benchmarks" / "runs" / "segmentation" / benchmark
            / (method if lr is None else f"{method}_lr{lr:g}"))
    overrides = [] if lr is None else [f"--model.init_args.optim.lr={lr}"]
    if method == "oracle":  # its artifact is a by-product each rerun and seed replaces
        overrides.append("--model.init_args.overwrite_artifact=true")
    recipe = f"recipes/segmentation/{benchmark}/{method}.yaml"
    if method == "source":  # a benchmark rerun retrains on purpose
        results, seconds = run_cli("fit", recipe, runs, "--model.init_args.overwrite_artifact=true")
        return [row(bench, base_setting, "source training", "source-dice", results["source_val/dice"],
                    seconds, run=results, epochs=int(results["epochs"]),
                    notes="Dice on the SOURCE volume it was trained on (training fit)")]
    if method == "entropy_prior_constant":
        write_tags(benchmark)
    if method == "entropy_prior_csv":
        write_source_sizes(benchmark)
    prefix = "source_val" if method == "oracle" else "target"
    if seeds is not None and method != "source_only":  # source-only draws no random number: one run
        seeded = [run_cli("fit", recipe, runs / f"seed{seed}", *overrides, f"--seed_everything={seed}")
                  for seed in seeds]
        note = NOTES.get(method, "the last epoch")
        metrics = {"dice": (f"{prefix}/dice", note),
                   "hd95": (f"{prefix}/hd95", "95th-percentile Hausdorff distance in mm on the 2 mm "
                                              "preprocessed grid"),
                   "epoch-seconds": ("timing/epoch_s", "mean training-epoch wall time (1 CPU thread), incl. "
                                                       "periodic whole-volume validation")}
        return seeded_rows(bench, setting, METHOD_NAMES[method], seeded, int(seeded[0][0]["epochs"]), metrics)
    if method == "source_only":
        results, seconds = run_cli("test", recipe, runs)
    else:
        results, seconds = run_cli("fit", recipe, runs, *overrides)
    epochs = 0 if method == "source_only" else int(results["epochs"])
    name = METHOD_NAMES[method]
    extra = {"notes": NOTES[method]} if method in NOTES else {}
    rows = [row(bench, setting, name, "dice", results[f"{prefix}/dice"], seconds, run=results, epochs=epochs,
                **extra),
            row(bench, setting, name, "hd95", results[f"{prefix}/hd95"], seconds, run=results, epochs=epochs,
                notes="95th-percentile Hausdorff distance in mm on the 2 mm preprocessed grid")]
    if epochs:
        rows.append(row(bench, setting, name, "epoch-seconds", results["timing/epoch_s"], seconds,
                        run=results, epochs=epochs,
                        notes="mean training-epoch wall time (1 CPU thread), incl. periodic whole-volume "
                              "validation"))
    if "timing/inference_voxels_per_s" in results:
        rows.append(row(bench, setting, name, "inference-voxels-per-s",
                        results["timing/inference_voxels_per_s"], seconds, run=results,
                        notes=INFERENCE[base_setting]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS))
    parser.add_argument("--methods", nargs="+", default=["source", *METHOD_NAMES],
                        help="in order; 'source' first trains the source model")
    parser.add_argument("--lr", type=float, default=None,
                        help="override the adaptation lr of the recipes (e.g. 1e-6, the official value); "
                             "rows get setting lr-<lr>")
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="one run per seed (rows: mean and standard deviation, each seed kept); default "
                             "one run at the recipe's seed")
    args = parser.parse_args()
    for method in args.methods:
        rows = run(args.benchmark, method, args.lr, args.seeds)
        path = append_rows("segmentation", rows)
        print(f"{method}: " + ", ".join(f"{r['metric']}={r['value']}" for r in rows), "->", path.name,
              flush=True)


if __name__ == "__main__":
    main()
