"""Pose suite on the SEMI-SYNTHETIC figures (``sfda.data.benchmarks.pose_figures``): flat-shaded
source figures -> photo-textured target figures. Source training, then source-only, AdaBN, Mean Teacher,
pose SFDA and its ablations (without source-protect; without pose contrastive + IM; temperature 0.05),
and an oracle trained on target labels for reference.

    python benchmarks/pose.py                      # everything, in order
    python benchmarks/pose.py --methods pose_sfda  # one method (the source artifact must exist)

Every method runs through the real CLI with its recipe; the target test figures' labels only report
(the last epoch is reported; nothing is chosen with them).
"""

from __future__ import annotations

import argparse

from common import ROOT, append_rows, row, run_cli

BENCHMARK = "flat->photo figures (semi-synthetic)"
RECIPES = ROOT / "recipes" / "pose" / "figures"
RUNS = ROOT / "benchmarks" / "runs" / "pose_figures"
SOURCE = "runs/pose_figures/source.pt"
ORACLE = "runs/pose_figures/oracle.pt"
VARIANTS = {  # method name -> (recipe, extra overrides, setting)
    "source_only": ("source_only", [], "closed"),
    "adabn": ("adabn", [], "closed"),
    "mean_teacher": ("mean_teacher", [], "closed"),
    "pose_sfda": ("pose_sfda", [], "closed"),
    "pose_sfda_no_source_protect": ("pose_sfda", ["--model.init_args.source_protect=false"], "ablation"),
    "pose_sfda_no_contrastive_im": ("pose_sfda", ["--model.init_args.target_relevant=false"], "ablation"),
    "pose_sfda_temperature_0.05": ("pose_sfda", ["--model.init_args.temperature=0.05"], "deviation"),
}
NAMES = {"source_only": "source-only", "adabn": "adabn", "mean_teacher": "mean-teacher",
         "pose_sfda": "pose-sfda", "pose_sfda_no_source_protect": "pose-sfda w/o source-protect",
         "pose_sfda_no_contrastive_im": "pose-sfda w/o contrastive+IM",
         "pose_sfda_temperature_0.05": "pose-sfda, temperature 0.05"}
PCK_NOTE = "PCK@0.05 of the heatmap size (24-pixel heatmaps), 500 target test figures"


def scores(name: str, setting: str, results: dict, seconds: float, epochs: int) -> list[dict]:
    rows = [row(BENCHMARK, setting, name, "pck", results["target/pck"], seconds, run=results, epochs=epochs,
                notes=PCK_NOTE),
            row(BENCHMARK, setting, name, "pck-box", results["target/pck_box"], seconds, run=results,
                epochs=epochs, notes="PCK@0.2 of the person box's longer side")]
    if epochs:
        rows.append(row(BENCHMARK, setting, name, "epoch-seconds", results["timing/epoch_s"], seconds,
                        run=results, epochs=epochs,
                        notes="mean training-epoch wall time, 1 torch thread, incl. evaluation"))
    return rows


def train(recipe: str, name: str) -> list[dict]:
    results, seconds = run_cli("fit", f"recipes/pose/figures/{recipe}.yaml", RUNS / recipe,
                               "--model.init_args.overwrite_artifact=true")
    return [row(BENCHMARK, "closed", name, "source-pck", results["source_val/best_pck"], seconds, run=results,
                epochs=int(results["epochs"]),
                notes="PCK@0.05 on the held-out tenth of its TRAINING figures")]


def run(method: str) -> list[dict]:
    if method == "source":
        return train("source", "source training")
    if method == "oracle":
        rows = train("oracle", "oracle (target labels)")
        results, seconds = run_cli("test", "recipes/pose/figures/source_only.yaml", RUNS / "oracle_test",
                                   f"--model.init_args.source={ORACLE}")
        return rows + scores("oracle (target labels)", "closed", results, seconds, 0)
    recipe, extra, setting = VARIANTS[method]
    command = "test" if method == "source_only" else "fit"
    results, seconds = run_cli(command, f"recipes/pose/figures/{recipe}.yaml", RUNS / method, *extra)
    return scores(NAMES[method], setting, results, seconds,
                  int(results.get("epochs", 0)) if command == "fit" else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["source", *VARIANTS, "oracle"])
    args = parser.parse_args()
    for method in args.methods:
        print(append_rows("pose", run(method)), method, flush=True)


if __name__ == "__main__":
    main()
