"""One run folder (``runs/<recipe>/version_N``) read as ``sfda report`` needs it, from the run's own files:
``config.yaml``, ``run_info.json``, ``results.json``, ``metrics.csv`` and the evidence under ``report/``
(``sfda.tasks.evidence``). Anything else in the folder is ignored; nothing in it is executed."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..tasks.evidence import EVIDENCE_DIR

EVAL_PREFIXES = ("target", "source_val", "online")  # where a run keeps its labelled scores (online: a stream)


class ReportInputError(ValueError):
    """A folder given to ``sfda report`` that cannot be reported; the message names it."""


@dataclass
class Run:
    """What ``sfda report`` knows of one run. ``curves``: ``{metric: [(epoch, value), ...]}`` per epoch
    (step values averaged over their epoch); ``evidence``: the arrays of ``report/<task>.npz``, if any."""

    path: Path
    info: dict
    results: dict
    recipe: str
    curves: dict[str, list[tuple[int, float]]]
    evidence: dict[str, np.ndarray] = field(default_factory=dict)
    overlays: list[Path] = field(default_factory=list)

    @property
    def task(self) -> str:
        return self.info.get("task") or "unknown"

    @property
    def method(self) -> str:
        return self.info.get("method") or "?"

    @property
    def name(self) -> str:
        """``<recipe folder>/version_N``: what tables and legends call the run."""
        return f"{self.path.parent.name}/{self.path.name}"

    @property
    def eval_prefix(self) -> str:
        """``target`` for adaptation, ``source_val`` for source training (whichever the run logged)."""
        keys = set(self.results) | set(self.curves)
        return next((p for p in EVAL_PREFIXES if any(k.startswith(p + "/") for k in keys)), "target")

    def headline(self, prefix: str) -> dict[str, float]:
        """``{name: value}`` of the flat ``<prefix>/<name>`` results (no per-class or per-volume keys)."""
        out = {}
        for key, value in self.results.items():
            name = key[len(prefix) + 1 :] if key.startswith(prefix + "/") else ""
            if name and "/" not in name and isinstance(value, int | float):
                out[name] = float(value)
        return out

    @property
    def stream_metric(self) -> str:
        """The online headline: ``error`` (classification) or ``dice`` (segmentation)."""
        return "dice" if "online/dice" in self.results and "online/error" not in self.results else "error"

    def stream(self, metric: str | None = None) -> list[tuple[str, float]]:
        """An online run's ``[(domain, value)]`` of ``online/<NN>_<domain>/<metric>`` (default its
        ``stream_metric``), in stream order (empty for an offline run)."""
        metric = metric or self.stream_metric
        found = []
        for key, value in self.results.items():
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "online" and parts[2] == metric and parts[1][:2].isdigit():
                found.append((int(parts[1][:2]), parts[1][3:], float(value)))
        return [(name, value) for _, name, value in sorted(found)]

    def per_item(self, prefix: str, metric: str) -> dict[str, float]:
        """``{item: value}`` of ``<prefix>/<metric>/<item>`` results (per volume, per class)."""
        start = f"{prefix}/{metric}/"
        return {
            k[len(start) :]: float(v)
            for k, v in self.results.items()
            if k.startswith(start) and v is not None
        }


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ReportInputError(f"{path}: not valid JSON ({err}); the run's file is damaged") from err


def read_curves(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch values of every column of Lightning's ``metrics.csv`` (mean of the epoch's rows)."""
    if not path.is_file():
        return {}
    sums: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            epoch = row.get("epoch", "")
            if not epoch.isdigit():
                continue
            for key, text in row.items():
                if key in ("epoch", "step") or not text:
                    continue
                try:
                    value = float(text)
                except ValueError:
                    continue
                if math.isfinite(value):
                    sums[key][int(epoch)].append(value)
    return {key: sorted((e, sum(v) / len(v)) for e, v in by_epoch.items()) for key, by_epoch in sums.items()}


def read_evidence(folder: Path) -> dict[str, np.ndarray]:
    """The arrays of the first ``report/*.npz`` (plain arrays only: ``allow_pickle`` stays off)."""
    for path in sorted(folder.glob("*.npz")):
        try:
            with np.load(path, allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except (OSError, ValueError) as err:
            raise ReportInputError(
                f"{path}: unreadable report evidence ({err}); rerun the fit or delete it"
            ) from err
    return {}


def not_a_run(path: Path) -> ReportInputError:
    versions = sorted(p.name for p in path.glob("version_*") if p.is_dir()) if path.is_dir() else []
    hint = (
        f"; it holds the runs {', '.join(versions[:5])}: give one of them, e.g. {path / versions[-1]}"
        if versions
        else "; give the folder a `sfda fit` or `sfda test` run wrote, e.g. runs/shot/version_0"
    )
    what = "does not exist" if not path.exists() else "is not a run folder (no config.yaml and run_info.json)"
    return ReportInputError(f"{path} {what}{hint}")


def read_run(path: Path) -> Run:
    """Read a run folder; refuse a folder that is not one, or a run that ended before its first epoch."""
    path = Path(path)
    if not (path / "config.yaml").is_file() or not (path / "run_info.json").is_file():
        raise not_a_run(path)
    info = read_json(path / "run_info.json")
    recipe = (path / "config.yaml").read_text()
    curves = read_curves(path / "metrics.csv")
    results_path = path / "results.json"
    if not results_path.is_file():
        done = max((e for values in curves.values() for e, _ in values), default=-1) + 1
        when = "before its first epoch ended" if done == 0 else f"after {done} epoch(s), before its end"
        raise ReportInputError(
            f"{path}: the run ({info.get('method', '?')}, started {info.get('started', '?')}) "
            f"failed or was stopped {when}: there is no results.json to report. Its "
            "error was printed by the command that ran it; fix that and run it again"
        )
    return Run(
        path=path,
        info=info,
        results=read_json(results_path),
        recipe=recipe,
        curves=curves,
        evidence=read_evidence(path / EVIDENCE_DIR),
        overlays=sorted((path / EVIDENCE_DIR / "overlays").glob("*.png"))
        + sorted((path / "overlays").glob("*.png")),
    )


def check_one_task(runs: list[Run]) -> str:
    """The task shared by ``runs``; refuse runs of different tasks, naming each run's task."""
    tasks = {run.task for run in runs}
    if len(tasks) > 1:
        listed = ", ".join(f"{run.path} ({run.task})" for run in runs)
        raise ReportInputError(
            f"runs of different tasks cannot share one report: {listed}; "
            "give runs of one task (one report per task)"
        )
    return tasks.pop()
