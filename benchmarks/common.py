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
