"""Peak memory against the size of the target set: source-only evaluation and one SHOT epoch.

    python benchmarks/memory_scaling.py [--sizes 10000 60000 600000] [--keep-inputs-mib 1024 0]

The target is an image folder of PNG files, as a user's own data comes (``sfda.data.ImageFolderDataModule``,
class sub-folders): the first N MNIST training images for N <= 60,000; above that a GENERATED set, each
MNIST training image repeated with a seeded random shift of up to 2 pixels (named ``generated_N``). The
model is the optdigits LeNet of ``recipes/digits/optdigits_mnist``. Each run is its own process started
through ``process_launcher.py`` (peak resident memory is its ``ru_maxrss``): ``sfda test`` of the
source-only recipe over the N images, and ``sfda fit`` of the SHOT recipe for one epoch on them (evaluated
on the 10,000 MNIST test images, so the evaluation's share stays fixed). ``--keep-inputs-mib`` runs each
size with each budget for kept test-view inputs (``data.keep_inputs_mib``; 0 decodes every pass).
Rows go to ``results/memory.json`` (setting ``scaling, <N> images, keep_inputs_mib <MiB>``), with what
SHOT's per-sample state takes by design (features and predictions of the N samples).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from common import ROOT, append_rows, row
from reference_loop import ensure_source

WORK = ROOT / "benchmarks" / "runs" / "memory_scaling"
LAUNCHER = Path(__file__).with_name("process_launcher.py")
BENCH = "optdigits->mnist image folder"
RECIPES = {"source-only evaluation (sfda test)": ("test", "recipes/digits/optdigits_mnist/source_only.yaml"),
           "SHOT, 1 epoch (sfda fit)": ("fit", "recipes/digits/optdigits_mnist/shot.yaml")}


def write_folder(folder: Path, pairs) -> None:
    """``(image (H, W) uint8, label)`` pairs as PNG files in class sub-folders, unless a ``.complete`` mark
    says an earlier call wrote them all."""
    from PIL import Image

    if (folder / ".complete").exists():
        return
    for c in range(10):
        (folder / str(c)).mkdir(parents=True, exist_ok=True)
    count = 0
    for count, (image, label) in enumerate(pairs, 1):
        Image.fromarray(image).save(folder / str(int(label)) / f"{count - 1:07d}.png")
    (folder / ".complete").write_text(str(count))


def shifted_copies(images, labels, total: int, seed: int = 0):
    """GENERATED: ``total`` images, each of ``images`` in turn moved by up to 2 pixels in x and y (seeded)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for i in range(total):
        image = images[i % len(images)]
        dy, dx = rng.integers(-2, 3, size=2)
        moved = np.zeros_like(image)
        h, w = image.shape
        moved[max(dy, 0): h + min(dy, 0), max(dx, 0): w + min(dx, 0)] = \
            image[max(-dy, 0): h + min(-dy, 0), max(-dx, 0): w + min(-dx, 0)]
        yield moved, labels[i % len(images)]


def target_folder(n: int) -> Path:
    """The folder of ``n`` target images (written on first use)."""
    from sfda.data.digits import load_digits_split

    images, labels = load_digits_split("mnist", "train")
    if n <= len(images):
        folder = WORK / "data" / f"mnist_{n}"
        write_folder(folder, zip(images[:n], labels[:n], strict=True))
    else:
        folder = WORK / "data" / f"generated_{n}"
        write_folder(folder, shifted_copies(images, labels, n))
    return folder


def recipe_file(name: str, train: Path, keep_mib: int) -> Path:
    """The named recipe with its data as an image folder of ``train`` (+ MNIST test for SHOT's evaluation)."""
    from sfda.data.digits import load_digits_split

    command, path = RECIPES[name]
    recipe = yaml.safe_load((ROOT / path).read_text())
    data = {"train": str(train), "role": "target", "batch_size": recipe["data"]["init_args"]["batch_size"],
            "train_view": recipe["data"]["init_args"].get("train_view", "weak"), "keep_inputs_mib": keep_mib}
    if command == "fit":
        test = WORK / "data" / "mnist_test"
        write_folder(test, zip(*load_digits_split("mnist", "test"), strict=True))
        data["val"] = data["test"] = str(test)
        recipe["trainer"]["max_epochs"] = 1
    recipe["data"] = {"class_path": "sfda.data.ImageFolderDataModule", "init_args": data}
    out = WORK / "recipes" / f"{command}_{train.name}_keep{keep_mib}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return out


def measure(name: str, train: Path, keep_mib: int) -> dict:
    """One run as its own process: launcher stats, wall seconds and the run's results.json."""
    command = RECIPES[name][0]
    runs = WORK / "runs" / f"{command}_{train.name}_keep{keep_mib}"
    stats = runs.with_suffix(".stats.json")
    runs.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(LAUNCHER), str(stats), "--module", "sfda.cli", "--", command, "--config",
           str(recipe_file(name, train, keep_mib)), f"--trainer.default_root_dir={runs}",
           "--trainer.enable_progress_bar=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1",
           "SFDA_SPAWNED_AT": repr(time.time())}
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{name} on {train} failed:\n{done.stderr[-3000:]}")
    versions = sorted(runs.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    return {**json.loads(stats.read_text()), "wall_s": wall,
            "results": json.loads((versions[-1] / "results.json").read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[10000, 60000, 600000])
    parser.add_argument("--keep-inputs-mib", nargs="+", type=int, default=[1024])
    parser.add_argument("--methods", nargs="+", choices=sorted(RECIPES), default=list(RECIPES))
    args = parser.parse_args()
    ensure_source("lenet")
    for n in args.sizes:
        folder = target_folder(n)
        data = ("real MNIST training images" if folder.name.startswith("mnist") else
                "GENERATED: MNIST training images repeated with seeded shifts of up to 2 px")
        for keep in args.keep_inputs_mib:
            for name in args.methods:
                result = measure(name, folder, keep)
                bank_mib = n * (256 + 10) * 4 / 1024**2 if name.startswith("SHOT") else 0.0
                print(f"N={n:,} keep {keep} MiB, {name}: peak {result['peak_rss_mib']:,.0f} MiB, "
                      f"{result['wall_s']:.0f} s", flush=True)
                append_rows("memory", [row(BENCH, f"scaling, {n} images, keep_inputs_mib {keep}", name,
                                           "peak-rss-mib",
                                           result["peak_rss_mib"], result["wall_s"], run=result["results"],
                                           n=n, data=data, cpu_s=round(result["cpu_s"], 1),
                                           per_sample_state_mib=round(bank_mib, 1),
                                           notes="ru_maxrss of the process (as a user starts it); "
                                                 "per_sample_state_mib: SHOT's N x (256 features + 10 "
                                                 "probabilities) float32, needed by design")])


if __name__ == "__main__":
    main()
