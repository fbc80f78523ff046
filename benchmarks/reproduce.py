"""Same seed, same numbers: a short rerun of four benchmarks through the real CLI, written to one JSON
file, so that a refactor can be checked against the code before it.

    python benchmarks/reproduce.py --out /tmp/before.json          # on the old code
    python benchmarks/reproduce.py --out /tmp/after.json           # on the new code
    python benchmarks/reproduce.py --compare /tmp/before.json /tmp/after.json

Run both with the same ``OMP_NUM_THREADS`` (1): the thread count changes the order of float sums, and
a training run amplifies that into different numbers. The runs are cut short (a few epochs, limited
batches) so the whole set takes about 20 minutes on two CPU cores; they check that the code computes
the same thing, not the benchmarks' accuracy (that is ``benchmarks/digits.py``, ``segmentation.py``
and ``detection.py``). Every run trains its own source model first, so source training is checked as
well. The recorded values are every number of each run's ``results.json`` except timings.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

from common import run_cli

QUIET = ["--trainer.enable_model_summary=false"]


def runs(root: Path) -> list[tuple[str, str, str, list[str]]]:
    """``(name, subcommand, recipe, overrides)`` in the order they must run (sources first)."""
    digits = root / "mnist_optdigits_source.pt"
    volumes = root / "colin27_itk_source.pt"
    boxes = "{artifact}"  # a source run cut short writes its artifact only into its own run folder

    def source(artifact: Path, *more: str) -> list[str]:
        return [f"--model.init_args.artifact={artifact}", "--model.init_args.overwrite_artifact=true", *more]

    return [
        ("mnist->optdigits/source", "fit", "recipes/digits/mnist_optdigits/source.yaml",
         source(digits, "--trainer.max_epochs=1")),
        ("mnist->optdigits/source-only", "test", "recipes/digits/mnist_optdigits/source_only.yaml",
         [f"--model.init_args.source={digits}"]),
        ("mnist->optdigits/shot", "fit", "recipes/digits/mnist_optdigits/shot.yaml",
         [f"--model.init_args.source={digits}", "--trainer.max_epochs=2"]),
        ("mnist->optdigits/nrc", "fit", "recipes/digits/mnist_optdigits/nrc.yaml",
         [f"--model.init_args.source={digits}", "--trainer.max_epochs=2"]),
        ("colin27->itk/source", "fit", "recipes/segmentation/colin27_itk/source.yaml",
         source(volumes, "--trainer.max_epochs=10", "--trainer.check_val_every_n_epoch=5")),
        ("colin27->itk/entropy+prior(estimated)", "fit",
         "recipes/segmentation/colin27_itk/entropy_prior_estimated.yaml",
         [f"--model.init_args.source={volumes}", "--trainer.max_epochs=3",
          "--trainer.check_val_every_n_epoch=3"]),
        ("digits->digits-on-photos/source", "fit", "recipes/detection/digits_photos/source.yaml",
         ["--trainer.max_epochs=1", "--trainer.limit_train_batches=30"]),
        ("digits->digits-on-photos/mean-teacher", "fit", "recipes/detection/digits_photos/mean_teacher.yaml",
         [f"--model.init_args.source={boxes}", "--trainer.max_epochs=1", "--trainer.limit_train_batches=10",
          "--data.init_args.train_subset=80"]),
    ]


def numbers(results: dict) -> dict[str, float]:
    """The run's numbers that the code computes (timings and run bookkeeping left out)."""
    skip = ("timing/", "run/")
    numeric = {k: v for k, v in results.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {k: v for k, v in sorted(numeric.items()) if not k.startswith(skip) and not k.endswith("wall_s")}


def record(out: Path) -> None:
    table: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="sfda-reproduce-") as tmp:
        root = Path(tmp)
        artifact = ""
        for name, subcommand, recipe, overrides in runs(root):
            overrides = [o.replace("{artifact}", artifact) for o in overrides]
            results, seconds = run_cli(subcommand, recipe, root / name.replace("/", "_"), *QUIET, *overrides)
            artifact = results.get("artifact", artifact)  # the last source run's own artifact
            table[name] = numbers(results)
            print(f"{name}: {seconds:.0f} s, {len(table[name])} numbers", flush=True)
            out.write_text(json.dumps(table, indent=1))


def compare(before: Path, after: Path, tolerance: float) -> int:
    """Print every number that differs by more than ``tolerance`` (absolute); returns the count."""
    old = {run: numbers(values) for run, values in json.loads(before.read_text()).items()}
    new = {run: numbers(values) for run, values in json.loads(after.read_text()).items()}
    differing = 0
    for run in old:
        for key, value in old[run].items():
            now = new.get(run, {}).get(key)
            same = now is not None and (value == now or math.isclose(value, now, abs_tol=tolerance))
            if not same:
                differing += 1
                print(f"{run} {key}: {value} -> {now}")
    for run in new:
        for key in new[run].keys() - old.get(run, {}).keys():
            print(f"{run} {key}: new, {new[run][key]}")
    print(f"{differing} of {sum(map(len, old.values()))} numbers differ by more than {tolerance}")
    return differing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the numbers of this code to this JSON file")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--tolerance", type=float, default=1e-6)
    args = parser.parse_args()
    if args.compare:
        raise SystemExit(1 if compare(*args.compare, args.tolerance) else 0)
    if not args.out:
        parser.error("give --out FILE or --compare BEFORE AFTER")
    record(args.out)


if __name__ == "__main__":
    main()
