"""Pose suite on the SEMI-SYNTHETIC figures (``sfda.data.benchmarks.pose_figures``, generator version 2):
flat-shaded source figures -> photo-textured target figures. Source training, then source-only, AdaBN, Mean
Teacher, pose SFDA (I, and T beside it) and its two ablations (without source-protect; without pose
contrastive + IM), and an oracle (the source model fine-tuned on target labels with the adaptation's step
budget). Every row is the mean and standard deviation over seeds, each seed's value stored.

    python benchmarks/pose.py                                  # everything, in order, seeds 0 1 2
    python benchmarks/pose.py --methods pose_sfda --seeds 0    # one method (the source artifact must exist)
    python benchmarks/pose.py --methods mean_teacher --reuse-finished   # finish what stopped

Every method runs through the real CLI with its recipe; the target test figures' labels only report (the last
epoch is reported; nothing is chosen with them). Source-only and AdaBN draw no random numbers and run once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import (
    RESULTS,
    ROOT,
    append_rows,
    epoch_means,
    finished_run,
    recipe_source,
    row,
    run_cli,
    seed_run,
    seeded_rows,
)

BENCHMARK = "flat->photo figures (semi-synthetic)"
RUNS = ROOT / "benchmarks" / "runs" / "pose_figures"
SOURCE = ROOT / "runs" / "pose_figures" / "source.pt"
ORACLE = "runs/pose_figures/oracle.pt"
NO_PROTECT = "--model.init_args.source_protect=false"
NO_TARGET_TERMS = "--model.init_args.target_relevant=false"
VARIANTS = {  # method name -> (recipe, extra overrides, setting, seeded)
    "source_only": ("source_only", [], "closed", False),
    "adabn": ("adabn", [], "closed", False),
    "mean_teacher": ("mean_teacher", [], "closed", True),
    "pose_sfda": ("pose_sfda", [], "closed", True),
    "pose_sfda_no_source_protect": ("pose_sfda", [NO_PROTECT], "ablation", True),
    "pose_sfda_no_contrastive_im": ("pose_sfda", [NO_TARGET_TERMS], "ablation", True),
}
NAMES = {"source_only": "source-only", "adabn": "adabn", "mean_teacher": "mean-teacher",
         "pose_sfda": "pose-sfda", "pose_sfda_no_source_protect": "pose-sfda w/o source-protect",
         "pose_sfda_no_contrastive_im": "pose-sfda w/o contrastive+IM"}
# metric -> (results.json key, note); target/ scores the evaluated network (pose SFDA's I, the teacher)
METRICS = {
    "pck": ("target/pck", "PCK@0.05 of the heatmap size (24-pixel heatmaps), 500 target test figures"),
    "t-pck": ("target_t_network/pck", "pose SFDA's T network (I is what the method reports)"),
    "student-pck": ("target_student/pck", "Mean Teacher's student (the teacher is what it reports)"),
    "pck-box": ("target/pck_box", "PCK@0.2 of the person box's longer side"),
    "occlusion-gate": ("train/occlusion_gate", "last epoch: fraction of joints whose I' peak reaches the "
                       "0.9 occlusion gate"),
    "confidence-gate": ("train/confidence_gate", "last epoch: fraction of joints whose teacher peak "
                        "reaches the 0.5 pseudo-label gate"),
    "ema-source-share": ("train/ema_source_share", "share of the source weights the EMA network still "
                         "holds at the end"),
    "epoch-seconds": ("timing/epoch_s", "mean training-epoch wall time, 2 CPU threads, incl. evaluation"),
}
# per-epoch diagnostics of every seeded run, kept in results/epochs/pose.json (method -> seed -> epochs)
EPOCH_KEYS = ["target/pck", "target_t_network/pck", "target_student/pck", "train/occlusion_gate",
              "train/confidence_gate", "label_free/peak", "train/loss", "train/loss_s", "train/loss_i",
              "train/loss_t_mse", "train/loss_pc", "train/loss_im"]


def cli(command: str, recipe: str, folder: Path, headline: str, reuse: bool,
        *extra: str) -> tuple[dict, float]:
    """``run_cli`` of a recipe under ``recipes/pose/figures/``; with ``reuse``, the newest run under
    ``folder`` instead when it finished (``headline`` reported)."""
    return (reuse and finished_run(folder, headline)) or run_cli(
        command, f"recipes/pose/figures/{recipe}.yaml", folder, *extra)


def train(recipe: str, name: str, artifact: Path, reuse: bool) -> tuple[list[dict], dict]:
    """Train the source (or oracle) model that writes ``artifact``; reused only while that file exists."""
    results, seconds = cli("fit", recipe, RUNS / recipe, "source_val/best_pck", reuse and artifact.is_file(),
                           "--model.init_args.overwrite_artifact=true")
    return [row(BENCHMARK, "closed", name, "source-pck", results["source_val/best_pck"], seconds, run=results,
                epochs=int(results["epochs"]),
                notes="PCK@0.05 on the held-out tenth of its TRAINING figures (selects its epoch)")], results


def run(method: str, seeds: list[int], reuse: bool) -> list[dict]:
    if method == "source":
        return train("source", "source training", SOURCE, reuse)[0]
    if method == "oracle":
        rows, _ = train("oracle", "oracle (target labels)", ROOT / ORACLE, reuse)
        runs = [cli("test", "source_only", RUNS / "oracle_test", "target/pck", reuse,
                    f"--model.init_args.source={ORACLE}")]
        return rows + seeded_rows(BENCHMARK, "closed", "oracle (target labels)", runs, 0, METRICS)
    recipe, extra, setting, seeded = VARIANTS[method]
    command = "test" if method == "source_only" else "fit"
    if not seeded:
        runs = [cli(command, recipe, RUNS / method, "target/pck", reuse, *extra)]
        epochs = int(runs[0][0].get("epochs", 0)) if command == "fit" else 0
        rows = seeded_rows(BENCHMARK, setting, NAMES[method], runs, epochs, METRICS)
        return [dict(r, notes=r["notes"].replace("one run", "one run (deterministic: any seed gives it)"))
                for r in rows]
    path = f"recipes/pose/figures/{recipe}.yaml"
    runs = [seed_run("pose", BENCHMARK, method, seed, recipe_source(path), RUNS / method / f"seed{seed}",
                     "target/pck", reuse,
                     lambda seed=seed: run_cli("fit", path, RUNS / method / f"seed{seed}",
                                               f"--seed_everything={seed}", *extra)) for seed in seeds]
    record_epochs(method, seeds)
    return seeded_rows(BENCHMARK, setting, NAMES[method], runs, int(runs[0][0]["epochs"]), METRICS)


def record_epochs(method: str, seeds: list[int]) -> None:
    """Each seed's per-epoch PCK of I and T (or teacher and student), gate-pass fractions and losses from its
    run folder into ``results/epochs/pose.json``; a seed taken from the seed record (no folder) keeps what
    the file has."""
    path = RESULTS / "epochs" / "pose.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    table = json.loads(path.read_text()) if path.exists() else {}
    for seed in seeds:
        epochs = epoch_means(RUNS / method / f"seed{seed}", EPOCH_KEYS)
        if epochs:
            table.setdefault(NAMES[method], {})[str(seed)] = epochs
    path.write_text(json.dumps(table, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["source", *VARIANTS, "oracle"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--reuse-finished", action="store_true",
                        help="keep a finished run (a seed's, source training's while its artifact exists) "
                             "instead of running it again")
    parser.add_argument("--epochs-only", action="store_true",
                        help="only rebuild results/epochs/pose.json from the seeds' run folders")
    args = parser.parse_args()
    for method in args.methods:
        if not args.epochs_only:
            print(append_rows("pose", run(method, args.seeds, args.reuse_finished)), method, flush=True)
        elif method in VARIANTS and VARIANTS[method][3]:  # seeded methods
            record_epochs(method, args.seeds)


if __name__ == "__main__":
    main()
