"""Whole processes side by side: the official SHOT digit code against ``sfda fit``, one SHOT epoch on MNIST.

    python benchmarks/official_shot_process.py --official PATH_TO_SHOT_CHECKOUT [--pairs 3]
    python benchmarks/official_shot_process.py --clone [URL]   # tim-learn/SHOT or a mirror, pinned commit

Same model, same target, same epoch: the optdigits LeNet of ``recipes/digits/optdigits_mnist`` (SHOT's own
``LeNetBase`` + BN bottleneck + weight-normalised head, inputs 28 px normalised with mean 0.5 and std 0.5,
which is the official ``u2m`` setting) adapted for one epoch to the 60,000 MNIST training images at batch 64.
The official side is ``digit/uda_digit.py --dset u2m --max_epoch 1`` of the official repository, fetched by
the caller or cloned here, never copied into this repository, and run unedited with its defaults (4
loader workers): its ``ckps/seed2020/u2m/source_{F,B,C}.pt`` are the sfda source model's weights renamed
to the official modules (so it skips its own source training), its ``data/mnist/processed/*.pt`` hold the
same MNIST images, and its ``data/usps/usps_28x28.pkl`` holds optdigits (the source data the official
script loads but the target phase never reads). It runs through ``process_launcher.py --legacy-shims``
(``.cuda()`` a no-op and the ``.next()`` that today's torch removed; see that file) because it was written
for CUDA and torch 1.x. The sfda side is ``sfda fit --config recipes/digits/optdigits_mnist/shot.yaml
--trainer.max_epochs=1`` as a user types it. Both with 1 thread (``OMP_NUM_THREADS=1``).

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
BENCH = "optdigits->mnist"
SETTING = "whole process, 1 SHOT epoch on 60000 MNIST images, LeNet, batch 64, 1 thread"


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


def official_state_dicts(artifact: Path) -> dict[str, dict]:
    """The sfda LeNet source artifact's weights under the official ``netF`` / ``netB`` / ``netC`` names."""
    import torch

    state = torch.load(artifact, map_location="cpu", weights_only=True)["state_dict"]
    net_f = {f"conv_params.{k[len('backbone.'):]}": v for k, v in state.items() if k.startswith("backbone.")}
    net_b = {k.replace("bottleneck.0.", "bottleneck.").replace("bottleneck.1.", "bn."): v
             for k, v in state.items() if k.startswith("bottleneck.")}
    net_c = {"fc.weight_g": state["head.parametrizations.weight.original0"],
             "fc.weight_v": state["head.parametrizations.weight.original1"], "fc.bias": state["head.bias"]}
    return {"F": net_f, "B": net_b, "C": net_c}


def prepare_official_workdir() -> Path:
    """The official script's working directory: data in its formats and the source model in its names."""
    import numpy as np
    import torch

    from sfda.data.digits import load_digits_split

    work = WORK / "official"
    processed = work / "data" / "mnist" / "processed"
    processed.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "training.pt"), ("test", "test.pt")):
        images, labels = load_digits_split("mnist", split)
        pair = (torch.from_numpy(np.ascontiguousarray(images)), torch.as_tensor(labels, dtype=torch.int64))
        torch.save(pair, processed / name)
    usps = work / "data" / "usps"
    usps.mkdir(parents=True, exist_ok=True)
    splits = [load_digits_split("optdigits", split) for split in ("train", "test")]
    with gzip.open(usps / "usps_28x28.pkl", "wb") as out:  # what its USPS loader reads: floats in [0, 1]
        pickle.dump([((x[:, None] / 255.0).astype(np.float32), y.astype(np.int64)) for x, y in splits], out)
    ckps = work / "ckps" / "seed2020" / "u2m"
    ckps.mkdir(parents=True, exist_ok=True)
    for part, state in official_state_dicts(ROOT / "runs" / "optdigits_mnist" / "source.pt").items():
        torch.save(state, ckps / f"source_{part}.pt")
    return work


def timed(cmd: list[str], cwd: Path, stats_file: Path) -> dict:
    """Run ``cmd`` (a launcher command) as its own process; its stats plus wall seconds and its output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
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


def run_official(digit: Path, work: Path) -> dict:
    cmd = [sys.executable, str(LAUNCHER), str(work / "stats.json"), "--legacy-shims", "--script",
           str(digit / "uda_digit.py"), "--", "--dset", "u2m", "--max_epoch", "1", "--output", "ckps"]
    result = timed(cmd, work, work / "stats.json")
    accuracies = re.findall(r"Task: u2m, Iter:\d+/\d+; Accuracy = ([0-9.]+)%", result["output"])
    if not accuracies:
        raise RuntimeError(f"the official script printed no target accuracy:\n{result['output'][-2000:]}")
    return {**result, "acc": float(accuracies[-1]) / 100}


def run_sfda() -> dict:
    runs = WORK / "sfda"
    stats = WORK / "sfda_stats.json"
    cmd = [sys.executable, str(LAUNCHER), str(stats), "--module", "sfda.cli", "--", "fit", "--config",
           "recipes/digits/optdigits_mnist/shot.yaml", "--trainer.max_epochs=1",
           f"--trainer.default_root_dir={runs}", "--trainer.enable_progress_bar=false"]
    result = timed(cmd, ROOT, stats)
    versions = sorted(runs.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    results = json.loads((versions[-1] / "results.json").read_text())
    return {**result, "acc": results["target/acc"]}


def summary(name: str, rounds: list[dict]) -> list[dict]:
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
        out.append(row(BENCH, SETTING, name, metric, statistics.median(values),
                       sum(r["wall_s"] for r in rounds), rounds=[round(v, 4) for v in values],
                       notes=note.format(worker=f"{worker:,.0f} MiB")))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", help="a checkout of tim-learn/SHOT")
    parser.add_argument("--clone", nargs="?", const=OFFICIAL_URL, default=None, metavar="URL",
                        help=f"clone URL (default {OFFICIAL_URL}) at {OFFICIAL_COMMIT[:7]}")
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    digit = official_checkout(args.official, args.clone)
    ensure_source("lenet")
    work = prepare_official_workdir()
    run_official(digit, work), run_sfda()  # warm-up: file caches, compiled kernels
    official, mine = [], []
    for i in range(args.pairs):
        official.append(run_official(digit, work))
        mine.append(run_sfda())
        them, us = official[-1], mine[-1]
        print(f"round {i + 1}: official {them['wall_s']:.1f} s, {them['peak_rss_mib']:,.0f} MiB, acc "
              f"{them['acc']:.4f} | sfda {us['wall_s']:.1f} s, {us['peak_rss_mib']:,.0f} MiB, acc "
              f"{us['acc']:.4f}", flush=True)
    rows = summary("official SHOT digit code (uda_digit.py, unedited)", official) + summary("sfda fit", mine)
    ratios = (("wall-ratio", "wall_s"), ("cpu-ratio", "total_cpu_s"), ("peak-rss-ratio", "peak_rss_mib"))
    for metric, key in ratios:
        ratio = statistics.median(m[key] for m in mine) / statistics.median(o[key] for o in official)
        rows.append(row(BENCH, SETTING, "sfda fit / official", metric, ratio, 0.0,
                        notes="ratio of the medians; below 1 is sfda ahead"))
        print(f"{metric}: {ratio:.2f}")
    append_rows("speed", rows)


if __name__ == "__main__":
    main()
