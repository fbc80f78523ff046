"""Whole processes side by side: the official SHOT digit code against ``sfda fit``, one SHOT epoch on MNIST.

    python benchmarks/official_shot_process.py [--case lenet|dtn] --official SHOT_CHECKOUT [--pairs 3]
    python benchmarks/official_shot_process.py --clone [URL]   # tim-learn/SHOT or a mirror, pinned commit

``--case lenet`` (default). Same model, same target, same epoch: the optdigits LeNet of
``recipes/digits/optdigits_mnist`` (SHOT's own ``LeNetBase`` + BN bottleneck + weight-normalised head,
inputs 28 px normalised with mean 0.5 and std 0.5, which is the official ``u2m`` setting) adapted for one
epoch to the 60,000 MNIST training images at batch 64.
The official side is ``digit/uda_digit.py --dset u2m --max_epoch 1`` of the official repository, fetched by
the caller or cloned here, never copied into this repository, and run unedited with its defaults (4
loader workers): its ``ckps/seed2020/u2m/source_{F,B,C}.pt`` are the sfda source model's weights renamed
to the official modules (so it skips its own source training), its ``data/mnist/processed/*.pt`` hold the
same MNIST images, and its ``data/usps/usps_28x28.pkl`` holds optdigits (the source data the official
script loads but the target phase never reads). It runs through ``process_launcher.py --legacy-shims``
(``.cuda()`` a no-op and the ``.next()`` that today's torch removed; see that file) because it was written
for CUDA and torch 1.x. The sfda side is ``sfda fit --config recipes/digits/optdigits_mnist/shot.yaml
--trainer.max_epochs=1`` as a user types it. Both with 1 thread (``OMP_NUM_THREADS=1``).

``--case dtn``: the official SVHN setting (``--dset s2m``: its DTN, MNIST resized to 32 px RGB) on both
sides. There is no SVHN here, so the DTN is UNTRAINED (seeded ``OfficialDTN`` of ``official_networks.py``,
the official ``network.py`` imported from the checkout, so sfda runs the same code), and the SVHN files the
official script opens at start (never read by its target phase) are 64-image PLACEHOLDERS, accepted by
``--accept-any-md5``. The sfda side is the SVHN SHOT recipe with its source swapped for that DTN and those
weights, in NCHW (``channels_last: false``: the DTN flattens with ``.view``, which a channels-last batch
cannot take). Accuracies are then meaningless; wall, CPU and memory compare the two pipelines on an
SVHN-sized network and input.

One warm-up of each (not counted), then ``--pairs`` rounds of official, sfda, alternating. Rows to
``results/speed.json`` (setting ``whole process``): wall, CPU (the process and its finished workers) and
peak resident memory (the main process's ``ru_maxrss``; the largest worker's in the notes) of each side,
the median over the rounds, the start-up time (process start to the first forward on a batch), the
final target accuracy each reports, and the sfda/official ratios.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pickle
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, append_rows, row
from reference_loop import ensure_source

OFFICIAL_URL = "https://github.com/tim-learn/SHOT"
OFFICIAL_COMMIT = "f7d555a0d53b525b885e5ef2a887a267a5be3c36"
WORK = ROOT / "benchmarks" / "runs" / "official_process"
LAUNCHER = Path(__file__).with_name("process_launcher.py")
CASES = {
    "lenet": {"dset": "u2m", "bench": "optdigits->mnist",
              "setting": "whole process, 1 SHOT epoch on 60000 MNIST images, LeNet, batch 64, 1 thread"},
    "dtn": {"dset": "s2m", "bench": "svhn->mnist, the official DTN (untrained)",
            "setting": "whole process, 1 SHOT epoch on 60000 MNIST images at 32 px RGB, DTN, batch 64, "
                       "1 thread"},
}


def official_checkout(path: str | None, clone: str | None) -> Path:
    """The official repository's ``digit`` folder: ``path`` as given, or a clone of ``clone`` (the official
    address or a mirror of it) at the pinned commit."""
    if path:
        root = Path(path)
    elif clone:
        root = WORK / "SHOT"
        if not root.exists():
            subprocess.run(["git", "clone", "-q", clone, str(root)], check=True)
            subprocess.run(["git", "-C", str(root), "checkout", "-q", OFFICIAL_COMMIT], check=True)
    else:
        raise SystemExit("give --official PATH (a checkout of tim-learn/SHOT) or --clone")
    script = root / "digit" / "uda_digit.py"
    if not script.is_file():
        raise SystemExit(f"--official: '{root}' has no digit/uda_digit.py (expected a checkout of "
                         f"{OFFICIAL_URL})")
    return root / "digit"


def split_state_dict(state: dict, parts: dict[str, tuple[str, dict[str, str]]]) -> dict[str, dict]:
    """``state`` cut into the official ``netF`` / ``netB`` / ``netC`` dicts: ``parts[name] = (prefix,
    renames)`` takes the keys under ``prefix`` and renames their rest by the first matching start."""
    out = {}
    for name, (prefix, renames) in parts.items():
        taken = {}
        for key, value in state.items():
            if key.startswith(prefix):
                rest = key[len(prefix):]
                for old, new in renames.items():
                    if rest.startswith(old):
                        rest = new + rest[len(old):]
                        break
                taken[rest] = value
        out[name] = taken
    return out


def lenet_source() -> dict[str, dict]:
    """The sfda LeNet source artifact's weights under the official module names."""
    import torch

    state = torch.load(ROOT / "runs" / "optdigits_mnist" / "source.pt", map_location="cpu",
                       weights_only=True)["state_dict"]
    head = {"head.parametrizations.weight.original0": "fc.weight_g",
            "head.parametrizations.weight.original1": "fc.weight_v", "head.bias": "fc.bias"}
    parts = split_state_dict(state, {"F": ("backbone.", {"": "conv_params."}),
                                     "B": ("bottleneck.", {"0.": "bottleneck.", "1.": "bn."})})
    return {**parts, "C": {new: state[old] for old, new in head.items()}}


def dtn_source(digit: Path, work: Path) -> dict[str, dict]:
    """A seeded, untrained official DTN (no SVHN here to train it): its weights for sfda (``dtn_source.pt``)
    and under the official module names."""
    import torch
    from official_networks import OfficialDTN

    os.environ["SHOT_DIGIT_DIR"] = str(digit)
    torch.manual_seed(0)
    state = OfficialDTN().state_dict()
    torch.save(state, work / "dtn_source.pt")
    head = {"fc.parametrizations.weight.original0": "fc.weight_g", "fc.parametrizations.weight.original1":
            "fc.weight_v"}
    return split_state_dict(state, {"F": ("netF.", {}), "B": ("netB.", {}), "C": ("netC.", head)})


def prepare_official_workdir(case: str, digit: Path) -> Path:
    """The official script's working directory: data in its formats and the source model in its names."""
    import numpy as np
    import torch

    from sfda.data.digits import load_digits_split

    work = WORK / f"official_{case}"
    processed = work / "data" / "mnist" / "processed"
    processed.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "training.pt"), ("test", "test.pt")):
        images, labels = load_digits_split("mnist", split)
        pair = (torch.from_numpy(np.ascontiguousarray(images)), torch.as_tensor(labels, dtype=torch.int64))
        torch.save(pair, processed / name)
    if case == "lenet":  # optdigits where the script loads USPS: floats in [0, 1], (N, 1, 28, 28)
        usps = work / "data" / "usps"
        usps.mkdir(parents=True, exist_ok=True)
        splits = [load_digits_split("optdigits", split) for split in ("train", "test")]
        with gzip.open(usps / "usps_28x28.pkl", "wb") as out:
            pickle.dump([((x[:, None] / 255.0).astype(np.float32), y.astype(np.int64)) for x, y in splits],
                        out)
        source = lenet_source()
    else:  # PLACEHOLDER SVHN files (64 seeded random images) where the script opens SVHN, never reading them
        from scipy.io import savemat

        svhn = work / "data" / "svhn"
        svhn.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for name in ("train_32x32.mat", "test_32x32.mat"):
            savemat(svhn / name, {"X": rng.integers(0, 256, (32, 32, 3, 64), dtype=np.uint8),
                                  "y": rng.integers(1, 11, (64, 1)).astype(np.uint8)})
        source = dtn_source(digit, work)
    ckps = work / "ckps" / "seed2020" / CASES[case]["dset"]
    ckps.mkdir(parents=True, exist_ok=True)
    for part, state in source.items():
        torch.save(state, ckps / f"source_{part}.pt")
    return work


def timed(cmd: list[str], cwd: Path, stats_file: Path, **env_extra: str) -> dict:
    """Run ``cmd`` (a launcher command) as its own process; its stats plus wall seconds and its output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", **env_extra}
    stats_file.unlink(missing_ok=True)
    env["SFDA_SPAWNED_AT"] = repr(time.time())
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    stats = json.loads(stats_file.read_text())
    return {**stats, "wall_s": wall, "total_cpu_s": stats["cpu_s"] + stats["children_cpu_s"],
            "output": done.stdout + done.stderr}


def run_official(case: str, digit: Path, work: Path) -> dict:
    dset = CASES[case]["dset"]
    flags = ["--legacy-shims"] + (["--accept-any-md5"] if case == "dtn" else [])
    cmd = [sys.executable, str(LAUNCHER), str(work / "stats.json"), *flags, "--script",
           str(digit / "uda_digit.py"), "--", "--dset", dset, "--max_epoch", "1", "--output", "ckps"]
    result = timed(cmd, work, work / "stats.json")
    accuracies = re.findall(rf"Task: {dset}, Iter:\d+/\d+; Accuracy = ([0-9.]+)%", result["output"])
    if not accuracies:
        raise RuntimeError(f"the official script printed no target accuracy:\n{result['output'][-2000:]}")
    return {**result, "acc": float(accuracies[-1]) / 100}


def sfda_recipe(case: str, digit: Path) -> Path:
    """The recipe ``sfda fit`` runs: the LeNet's as it is; for the DTN, the SVHN recipe with the source
    network swapped for the official DTN and its seeded weights."""
    if case == "lenet":
        return ROOT / "recipes" / "digits" / "optdigits_mnist" / "shot.yaml"
    import yaml

    recipe = yaml.safe_load((ROOT / "recipes" / "digits" / "svhn_mnist" / "shot.yaml").read_text())
    recipe["model"]["init_args"]["source"] = {
        "architecture": f"{Path(__file__).with_name('official_networks.py')}:OfficialDTN",
        "weights": str(WORK / "official_dtn" / "dtn_source.pt"), "feature_layer": "netB",
        "head_layer": "netC",
        "class_names": [str(c) for c in range(10)],
        "input": {"size": 32, "channels": 3, "mean": [0.5] * 3, "std": [0.5] * 3}}
    # the official DTN flattens with .view, which a channels-last batch cannot take: NCHW, as the official
    # script runs it
    recipe["channels_last"] = False
    path = WORK / "sfda_dtn.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def run_sfda(case: str, digit: Path) -> dict:
    runs = WORK / f"sfda_{case}"
    stats = WORK / f"sfda_{case}_stats.json"
    cmd = [sys.executable, str(LAUNCHER), str(stats), "--module", "sfda.cli", "--", "fit", "--config",
           str(sfda_recipe(case, digit)), "--trainer.max_epochs=1", f"--trainer.default_root_dir={runs}",
           "--trainer.enable_progress_bar=false"]
    result = timed(cmd, ROOT, stats, SHOT_DIGIT_DIR=str(digit))
    versions = sorted(runs.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    results = json.loads((versions[-1] / "results.json").read_text())
    return {**result, "acc": results["target/acc"]}


def summary(case: str, name: str, rounds: list[dict]) -> list[dict]:
    """Median rows of one side over the rounds (each round's value kept)."""
    out = []
    for metric, key, note in (
            ("wall-s", "wall_s", "whole process, as started by a user"),
            ("cpu-s", "total_cpu_s", "user + system CPU of the process and its finished loader workers"),
            ("peak-rss-mib", "peak_rss_mib", "ru_maxrss of the main process; largest child process: {worker} "
                                             "(a forked child counts the pages it shares with its parent)"),
            ("startup-s", "startup_s", "process start to the network's first forward on a batch (imports, "
                                       "data set-up, model loading)"),
            ("target-acc", "acc", "MNIST test accuracy the run reports after its epoch (a sanity check)")):
        values = [r[key] for r in rounds]
        worker = max(r["children_peak_rss_mib"] for r in rounds)
        out.append(row(CASES[case]["bench"], CASES[case]["setting"], name, metric, statistics.median(values),
                       sum(r["wall_s"] for r in rounds), rounds=[round(v, 4) for v in values],
                       notes=note.format(worker=f"{worker:,.0f} MiB")))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=sorted(CASES), default="lenet")
    parser.add_argument("--official", help="a checkout of tim-learn/SHOT")
    parser.add_argument("--clone", nargs="?", const=OFFICIAL_URL, default=None, metavar="URL",
                        help=f"clone URL (default {OFFICIAL_URL}) at {OFFICIAL_COMMIT[:7]}")
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    digit = official_checkout(args.official, args.clone)
    if args.case == "lenet":
        ensure_source("lenet")
    work = prepare_official_workdir(args.case, digit)
    run_official(args.case, digit, work), run_sfda(args.case, digit)  # warm-up: file caches, compiled kernels
    official, mine = [], []
    for i in range(args.pairs):
        official.append(run_official(args.case, digit, work))
        mine.append(run_sfda(args.case, digit))
        them, us = official[-1], mine[-1]
        print(f"round {i + 1}: official {them['wall_s']:.1f} s, {them['peak_rss_mib']:,.0f} MiB, acc "
              f"{them['acc']:.4f} | sfda {us['wall_s']:.1f} s, {us['peak_rss_mib']:,.0f} MiB, acc "
              f"{us['acc']:.4f}", flush=True)
    rows = (summary(args.case, "official SHOT digit code (uda_digit.py, unedited)", official)
            + summary(args.case, "sfda fit", mine))
    ratios = (("wall-ratio", "wall_s"), ("cpu-ratio", "total_cpu_s"), ("peak-rss-ratio", "peak_rss_mib"))
    for metric, key in ratios:
        ratio = statistics.median(m[key] for m in mine) / statistics.median(o[key] for o in official)
        rows.append(row(CASES[args.case]["bench"], CASES[args.case]["setting"], "sfda fit / official", metric,
                        ratio, 0.0, notes="ratio of the medians; below 1 is sfda ahead"))
        print(f"{metric}: {ratio:.2f}")
    append_rows("speed", rows)


if __name__ == "__main__":
    main()
