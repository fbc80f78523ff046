"""The README quickstart's own numbers: SHOT on SVHN->MNIST with the real ccexam SVHN model, as the
quick demo (a fixed 10k subset of the MNIST training images as target, 2 epochs) and as the full
recipe (60k, 10 epochs), each with 1 and 2 torch threads, so the README and docs/index.md can say how
long each takes and how far the numbers move with the thread count.

    python benchmarks/quickstart.py run --setting quick --threads 1 2
    python benchmarks/quickstart.py record RUN_DIR --setting full --threads 1 --seconds 3020

``run`` runs the command the README prints (the process's wall time is the reported seconds);
``record`` adds the rows of a run made elsewhere with that same command.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, append_rows, row

RECIPE = "recipes/digits/svhn_mnist/shot.yaml"
QUICK = ["--trainer.max_epochs=2", "--data.init_args.train_subset=10000"]  # the README's quick demo line
SETTINGS = {"quick": ("quick demo: 10k target images, 2 epochs", QUICK),
            "full": ("full recipe: 60k target images, 10 epochs", [])}


def rows_of(run: Path, setting: str, threads: int, seconds: float) -> list[dict]:
    results = json.loads((run / "results.json").read_text())
    info = json.loads((run / "run_info.json").read_text())
    name = f"{SETTINGS[setting][0]}, {threads} thread{'s' if threads > 1 else ''}"
    commit = {"run/git_commit": (info.get("git_commit") or "")[:7]}
    notes = ("wall seconds of the whole command (start-up, source-only evaluation, training, per-epoch "
             "evaluation on the 10k MNIST test split) on this repository's 2-core CPU machine")
    epochs = int(results["epochs"])
    return [row("svhn->mnist", name, "source-only", "acc", results["source_only/acc"], seconds, run=commit,
                epochs=0),
            row("svhn->mnist", name, "shot", "acc", results["target/acc"], seconds, run=commit,
                epochs=epochs),
            row("svhn->mnist", name, "shot", "acc-per-class", results["target/acc_per_class"], seconds,
                run=commit, epochs=epochs),
            row("svhn->mnist", name, "shot", "wall-seconds", seconds, seconds, run=commit, epochs=epochs,
                notes=notes)]


def run(setting: str, threads: int) -> list[dict]:
    root = ROOT / "benchmarks" / "runs" / "quickstart" / f"{setting}_t{threads}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "NO_ALBUMENTATIONS_UPDATE": "1"}
    env.pop("SFDA_RUN_VERSION", None)
    command = [sys.executable, "-m", "sfda.cli", "fit", "--config", str(ROOT / RECIPE),
               f"--trainer.default_root_dir={root}", *SETTINGS[setting][1]]
    started = time.time()
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    latest = max(root.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    return rows_of(latest, setting, threads, time.time() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["run", "record"])
    parser.add_argument("run_dir", nargs="?", type=Path, help="record: the run folder")
    parser.add_argument("--setting", choices=sorted(SETTINGS), required=True)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, help="record: the command's wall seconds")
    args = parser.parse_args()
    if args.action == "record":
        if args.run_dir is None or args.seconds is None or len(args.threads) != 1:
            parser.error("record needs RUN_DIR, --seconds and one --threads value")
        rows = rows_of(args.run_dir, args.setting, args.threads[0], args.seconds)
    else:
        rows = [r for threads in args.threads for r in run(args.setting, threads)]
    print(append_rows("quickstart", rows))


if __name__ == "__main__":
    main()
