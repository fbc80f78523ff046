"""The sections every run gets (summary, curves, timing, environment, recipe) and the comparison of
several runs. Task sections are in ``sfda.report.task_sections``."""

from __future__ import annotations

from . import plots
from .page import Section, collapsed, note, table
from .run import Run

CURVE_GROUPS = (  # (metric prefix, title)
    ("train/", "training losses (mean over each epoch's logged steps)"),
    ("label_free/", "label-free scores on the evaluation split (no labels used)"),
    ("engine/", "pseudo-label engine"),
)


def summary(run: Run) -> Section:
    """Source-only against the end of the run for the run's labelled scores; what the result is."""
    prefix = run.eval_prefix
    after, before = run.headline(prefix), run.headline("source_only")
    selected = run.headline(f"selected/{prefix}")
    rows = [[name, before.get(name, ""), value, *([selected.get(name, "")] if selected else [])]
            for name, value in after.items()]
    rows += [[f"label-free {name}", "", value, *([""] if selected else [])]
             for name, value in run.headline("label_free").items()]
    header = ["score", "source-only", "end of run", *(["selected"] if selected else [])]
    parts = [table(header, rows)] if rows else [note("the run logged no scores")]
    if run.results.get("selected/by"):
        r = run.results
        epoch = int(r["selected/epoch"]) + 1
        picked = f"picked by {r['selected/by']} ({r['selected/mode']}, score {r['selected/score']:.4f})"
        parts.append(note(f"selected: {r['selected/checkpoint']}, epoch {epoch}, {picked}; target labels "
                          "chose nothing"))
    epochs = int(run.results.get("epochs", 0))
    parts.append(
        note(
            f"{run.method} ({run.task}), stage {run.info.get('stage', '?')}, {epochs} epoch(s), "
            f"{run.results.get('wall_s', float('nan')):.0f} s; the scores are the last epoch's "
            "(target labels, where the benchmark has them, only report). Run folder: "
            f"{run.path.resolve()}"
        )
    )
    return Section(f"{run.name}: summary", parts)


def curve_sections(run: Run, figures: plots.Figures) -> Section:
    """Per-epoch curves: the labelled scores with their source-only level, the losses, the label-free
    scores and the engine's values, as logged in ``metrics.csv``."""
    prefix, parts = run.eval_prefix, []
    source = run.headline("source_only")
    scored = {
        name: run.curves[f"{prefix}/{name}"]
        for name in run.headline(prefix)
        if f"{prefix}/{name}" in run.curves
    }
    if scored:
        title = f"{prefix} scores per epoch (labels only report), dashed: source-only"
        parts.append(figures.save(plots.small_multiples(scored, title, source), "scores"))
    for start, title in CURVE_GROUPS:
        series = {k: v for k, v in run.curves.items() if k.startswith(start)}
        if series:
            parts.append(figures.save(plots.small_multiples(series, title), start))
    if not parts:
        parts.append(note("no per-epoch values: the run trained no epoch (sfda test) or logged none"))
    return Section(f"{run.name}: curves", parts)


def stream(run: Run, figures: plots.Figures) -> list[Section]:
    """An online run: the error (segmentation: Dice) of each domain along the stream (predicted as the
    method's paper does, labels only score), as a table and a curve; nothing for an offline run."""
    errors = run.stream()
    if not errors:
        return []
    label = f"online {run.stream_metric}"
    samples = dict(run.stream("samples"))
    rows = [[k + 1, name, value, int(samples.get(name, 0))] for k, (name, value) in enumerate(errors)]
    parts = [figures.save(plots.stream_curves({run.name: errors}, label,
                                              f"{label} per domain, in stream order"), "stream"),
             table(["#", "domain", label, "samples"], rows)]
    return [Section(f"{run.name}: the stream", parts)]


def timing(run: Run, figures: plots.Figures) -> Section:
    rows = [
        [key.removeprefix("timing/"), value]
        for key, value in sorted(run.results.items())
        if key.startswith("timing/") and isinstance(value, int | float)
    ]
    rows += [[key, run.results[key]] for key in ("wall_s", "fit/wall_s", "test/wall_s") if key in run.results]
    parts = [table(["timing", "value (s, or per s)"], rows)] if rows else []
    if "time/epoch_s" in run.curves:
        series = {"seconds per epoch": run.curves["time/epoch_s"]}
        parts.append(
            figures.save(plots.curves(series, "seconds", "wall time of each epoch (s)"), "epoch_seconds")
        )
    return Section(f"{run.name}: timing", parts or [note("no timings recorded")])


def environment(run: Run) -> Section:
    info = run.info
    rows = [
        [key, info[key]]
        for key in (
            "stage",
            "task",
            "method_class",
            "seed",
            "git_commit",
            "processes",
            "precision",
            "started",
            "command",
        )
        if key in info
    ]
    rows += [[f"version of {name}", version] for name, version in (info.get("versions") or {}).items()]
    return Section(
        f"{run.name}: environment and recipe",
        [table(["", ""], rows), collapsed("the resolved recipe (config.yaml)", run.recipe)],
    )


def comparison(runs: list[Run], figures: plots.Figures) -> Section:
    """A table of every run's headline scores and time, and each shared score's curves side by side."""
    prefix = runs[0].eval_prefix
    names = list(dict.fromkeys(n for run in runs for n in run.headline(prefix)))
    rows = [
        [run.name, run.method]
        + [run.headline("source_only").get(n, "") for n in names[:1]]
        + [run.headline(prefix).get(n, "") for n in names]
        + [run.results.get("wall_s", "")]
        for run in runs
    ]
    header = (
        ["run", "method"] + [f"source-only {n}" for n in names[:1]] + [f"{prefix} {n}" for n in names] + ["s"]
    )
    parts = [table(header, rows)]
    for metric in ("error", "dice"):
        streams = {run.name: run.stream() for run in runs if run.stream() and run.stream_metric == metric}
        if streams:
            suffix = "" if metric == "error" else "_dice"
            parts.append(figures.save(plots.stream_curves(streams, f"online {metric}",
                                                          f"online {metric} per domain, all runs"),
                                      "compare_stream" + suffix))
    for name in names[:2]:
        key = f"{prefix}/{name}"
        series = {run.name: run.curves[key] for run in runs if key in run.curves}
        if series:
            parts.append(
                figures.save(plots.curves(series, name, f"{key} per epoch, all runs"), f"compare_{name}")
            )
    return Section("comparison of the runs", parts)
