"""Helpers of the benchmark suites: run the real `sfda` CLI, read results.json, append result rows.

Rows follow DESIGN.md: {"benchmark", "setting", "method", "metric", "value", "seconds", "commit",
"date"} plus "epochs" and "notes" where they say how a number was obtained.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# one data cache for every suite, whatever the working directory (in-process helpers fetch too)
os.environ.setdefault("SFDA_DATA", str(ROOT / "data"))


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "uncommitted"


def run_cli(subcommand: str, recipe: str, run_root: Path, *overrides: str,
            tree: Path = ROOT) -> tuple[dict, float]:
    """Run ``sfda <subcommand> --config <recipe>`` in a subprocess; returns (results.json, wall seconds), the
    results with ``run/peak_rss_mib``, the subprocess's peak resident memory. ``tree``: the source tree
    whose code and recipe run (another checkout, for before / after comparisons)."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    env.pop("SFDA_RUN_VERSION", None)
    cmd = [sys.executable, "-m", "sfda.cli", subcommand, "--config", str(tree / recipe),
           f"--trainer.default_root_dir={run_root}", "--trainer.enable_progress_bar=false", *overrides]
    started = time.time()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(cmd, cwd=tree, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)  # the child's own peak resident memory, not its siblings'
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    seconds = time.time() - started
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{stderr[-3000:]}")
    latest = max(run_root.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    results = json.loads((latest / "results.json").read_text())
    results["run/peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux reports KiB
    info = latest / "run_info.json"
    if info.exists() and json.loads(info.read_text()).get("git_commit"):
        # the code that ran, not HEAD now
        results["run/git_commit"] = json.loads(info.read_text())["git_commit"][:7]
    return results, seconds


def append_rows(suite: str, rows: list[dict]) -> Path:
    """Add rows to ``benchmarks/results/<suite>.json``, replacing rows with the same (benchmark, setting,
    method, metric)."""
    import fcntl

    path = RESULTS / f"{suite}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:  # suites running in parallel append to the same file
        fcntl.flock(lock, fcntl.LOCK_EX)
        existing = json.loads(path.read_text()) if path.exists() else []
        key = lambda r: (r["benchmark"], r["setting"], r["method"], r["metric"])  # noqa: E731
        fresh = {key(r) for r in rows}
        merged = [r for r in existing if key(r) not in fresh] + rows
        path.write_text(json.dumps(merged, indent=1))
    return path


def row(benchmark: str, setting: str, method: str, metric: str, value: float, seconds: float,
        run: dict | None = None, **extra) -> dict:
    """One result row; ``run`` (a results.json from ``run_cli``) supplies the commit the run started from."""
    code = (run or {}).get("run/git_commit") or commit()
    return {"benchmark": benchmark, "setting": setting, "method": method, "metric": metric,
            "value": round(float(value), 4), "seconds": round(float(seconds), 1), "commit": code,
            "date": datetime.date.today().isoformat(), **extra}


def seeded_rows(bench: str, setting: str, name: str, runs: list[tuple[dict, float]], epochs: int,
                metrics: dict[str, tuple[str, str]]) -> list[dict]:
    """Mean and sample standard deviation over the seeds' runs (``(results.json, seconds)``) of every metric
    in ``metrics`` (``metric -> (results.json key, note)``) that every run reports; each seed's value kept."""
    rows = []
    for metric, (key, note) in metrics.items():
        values = [results[key] for results, _ in runs if key in results]
        if len(values) != len(runs) or not values:
            continue
        spread = {"std": round(statistics.stdev(values), 4)} if len(values) > 1 else {}  # one run: no SD
        how = f"mean and sample standard deviation over {len(values)} seeds" if spread else "one run"
        rows.append(row(bench, setting, name, metric, statistics.mean(values),
                        sum(seconds for _, seconds in runs), run=runs[0][0], epochs=epochs,
                        seeds=[round(float(v), 4) for v in values], notes=f"{note}; {how}", **spread))
    return rows


def finished_run(root: Path, headline: str) -> tuple[dict, float] | None:
    """``(results.json, wall seconds)`` of the newest run under ``root`` that ran to its last epoch (not
    stopped, not collapsed, ``headline`` reported), else None: a benchmark's ``--reuse-finished`` then keeps
    it instead of running it again."""
    versions = sorted(root.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    if not versions or not (versions[-1] / "results.json").is_file():
        return None
    results = json.loads((versions[-1] / "results.json").read_text())
    if results.get("stopped") or results.get("collapsed") or headline not in results:
        return None
    info = json.loads((versions[-1] / "run_info.json").read_text())
    if info.get("git_commit"):
        results["run/git_commit"] = info["git_commit"][:7]
    return results, float(results.get("wall_s", 0.0))


def epoch_means(root: Path, keys: list[str]) -> list[dict]:
    """Per epoch of the newest run under ``root`` (its ``metrics.csv``): ``{"epoch", key: mean}`` for each
    of ``keys`` the epoch logs (a step-logged loss: the mean of its logged steps); ``[]`` without a run."""
    import csv

    versions = sorted(root.glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not versions:
        return []
    sums: dict[int, dict[str, list[float]]] = {}
    with open(versions[-1], newline="") as table:
        for line in csv.DictReader(table):
            logged = sums.setdefault(int(line["epoch"]), {})
            for key in keys:
                if line.get(key):
                    logged.setdefault(key, []).append(float(line[key]))
    return [{"epoch": epoch, **{k: round(statistics.mean(v), 6) for k, v in logged.items()}}
            for epoch, logged in sorted(sums.items())]


# A finished seed of a seeded row is recorded in git (benchmarks/results/seed_runs/<suite>.json), keyed by
# the fingerprint of the source weights it adapted: a later session, on a fresh machine whose run folders are
# gone, finishes the row with ``--reuse-finished`` instead of rerunning the seeds it already has, provided its
# source model is bitwise the same (retrained from the same recipe and seed, or copied).
SEED_RUNS = RESULTS / "seed_runs"


def weights_fingerprint(artifact: Path) -> str:
    """sha256 (16 hex digits) over a source artifact's ``state_dict``, names and tensor bytes: equal for equal
    weights whatever else the file holds (paths, dates)."""
    import hashlib

    import torch

    state = torch.load(artifact, map_location="cpu", weights_only=True)["state_dict"]
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _scalars(results: dict) -> dict:
    return {k: v for k, v in results.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


def recorded_seed(suite: str, benchmark: str, method: str, seed: int,
                  weights: str) -> tuple[dict, float] | None:
    """The recorded ``(results, seconds)`` of this seed from the same source weights, else None."""
    path = SEED_RUNS / f"{suite}.json"
    for record in json.loads(path.read_text()) if path.exists() else []:
        if (record["benchmark"], record["method"], record["seed"], record["weights"]) == (
                benchmark, method, seed, weights):
            return dict(record["results"]), float(record["seconds"])
    return None


def record_seed(suite: str, benchmark: str, method: str, seed: int, weights: str, results: dict,
                seconds: float) -> None:
    """Keep a finished seed's scalar results in ``seed_runs/<suite>.json`` (replacing the same seed's record
    from the same weights)."""
    import fcntl

    path = SEED_RUNS / f"{suite}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": benchmark, "method": method, "seed": seed, "weights": weights,
              "commit": results.get("run/git_commit") or commit(), "date": datetime.date.today().isoformat(),
              "seconds": round(seconds, 1), "results": _scalars(results)}
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = json.loads(path.read_text()) if path.exists() else []
        same = lambda r: (r["benchmark"], r["method"], r["seed"], r["weights"]) == (  # noqa: E731
            benchmark, method, seed, weights)
        path.write_text(json.dumps([r for r in records if not same(r)] + [record], indent=1))


def recipe_source(recipe: str) -> Path:
    """The source artifact a recipe adapts (``model.init_args.source``, the recipes it includes with
    ``config:`` merged in), relative to the repository root."""
    from sfda.recipe_files import expanded_recipe

    return ROOT / expanded_recipe(ROOT / recipe)["model"]["init_args"]["source"]


def seed_run(suite: str, benchmark: str, method: str, seed: int, source: Path, local: Path, headline: str,
             reuse: bool, start) -> tuple[dict, float]:
    """One seed of a seeded row: with ``reuse``, the finished run under ``local`` or the recorded seed from
    the same source weights; otherwise (or when neither exists) ``start()`` runs it, and it is recorded."""
    weights = weights_fingerprint(source)
    if reuse:
        found = finished_run(local, headline) or recorded_seed(suite, benchmark, method, seed, weights)
        if found:
            return found
    results, seconds = start()
    record_seed(suite, benchmark, method, seed, weights, results, seconds)
    return results, seconds
