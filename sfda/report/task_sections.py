"""The task-specific sections of a run's report, from its results and its ``report/`` evidence:
classification (per-class accuracy, confusion, feature projection, gallery, unknown rejection),
segmentation (per-volume Dice, overlays), detection (per-class AP50, overlays) and pose (per-joint PCK,
overlays)."""

from __future__ import annotations

import numpy as np

from . import plots
from .page import Section, note
from .run import Run

TITLES = {"before": "source-only", "after": "adapted"}
NO_EVIDENCE = (
    "no per-sample evidence in {path}/report: the run kept none (--report_evidence=false, a source "
    "training run, or a run older than sfda report)"
)


def principal_plane(features: np.ndarray) -> np.ndarray:
    """``(M, D) -> (M, 2)``: the features on their first two principal components."""
    centred = features.astype(np.float64) - features.mean(axis=0)
    _, _, directions = np.linalg.svd(centred, full_matrices=False)
    return centred @ directions[:2].T


def counts(truth: np.ndarray, predicted: np.ndarray, size: int) -> np.ndarray:
    """``(size, size)`` confusion counts, rows = true class."""
    return np.bincount(truth * size + predicted, minlength=size * size).reshape(size, size)


def class_accuracy(truth: np.ndarray, predicted: np.ndarray, classes: int) -> list[float]:
    return [
        float((predicted[truth == c] == c).mean()) if (truth == c).any() else float("nan")
        for c in range(classes)
    ]


def classification(run: Run, figures: plots.Figures) -> list[Section]:
    ev = run.evidence
    if not ev:
        return [Section(f"{run.name}: classification", [note(NO_EVIDENCE.format(path=run.path))])]
    names, label = [str(n) for n in ev["class_names"]], ev["label"]
    classes, whens = len(names), [w for w in ("before", "after") if f"{w}_pred" in ev]
    size = classes + int(
        bool((label == classes).any() or any((ev[f"{w}_pred"] == classes).any() for w in whens))
    )
    shown = names + ["unknown"] * (size - classes)
    parts: list = []
    labelled = label >= 0
    if labelled.any():
        truth = label[labelled]
        accuracy = {w: class_accuracy(truth, ev[f"{w}_pred"][labelled], size) for w in whens}
        parts.append(
            figures.save(
                plots.paired_bars(
                    shown,
                    accuracy.get("before"),
                    accuracy["after"],
                    "accuracy",
                    "per-class accuracy (target evaluation split)",
                ),
                "class_accuracy",
            )
        )
        matrices = {TITLES[w]: counts(truth, ev[f"{w}_pred"][labelled], size) for w in whens}
        parts.append(figures.save(plots.confusion_pair(matrices, shown, "confusion matrices"), "confusion"))
    projected = ev["projected"]
    panels = {TITLES[w]: (principal_plane(ev[f"{w}_features"]), ev[f"{w}_pred"][projected]) for w in whens}
    parts.append(
        figures.save(
            plots.projections(
                panels,
                shown,
                f"target features, PCA of {len(projected)} samples, coloured by predicted class",
            ),
            "projection",
        )
    )
    parts += gallery(ev, shown, figures)
    if np.isfinite(float(ev["threshold"])) or (label == classes).any():
        parts.append(rejection(ev, classes, whens, figures))
    return [Section(f"{run.name}: classification", parts)]


def gallery(ev: dict, names: list[str], figures: plots.Figures) -> list:
    """Image grids of the samples the adaptation corrected and broke (captions: true: before -> after)."""
    if "gallery_corrected" not in ev:
        return [note("no gallery: the run has no source-only predictions or no labels to compare with")]
    parts = []
    for kind in ("corrected", "broken"):
        images, at = ev[f"gallery_{kind}"], ev[f"gallery_{kind}_at"]
        if not len(images):
            parts.append(note(f"no evaluation sample was {kind} by the adaptation"))
            continue
        captions = [
            f"{names[ev['label'][i]]}: {names[ev['before_pred'][i]]}\u2192{names[ev['after_pred'][i]]}"
            for i in at
        ]
        title = f"samples the adaptation {kind} (true class: source-only → adapted prediction)"
        parts.append(figures.save(plots.image_grid(images, captions, title), f"gallery_{kind}"))
    return parts


def rejection(ev: dict, classes: int, whens: list[str], figures: plots.Figures):
    """Universal DA: the normalised entropy of known and unknown samples against the rejection threshold."""
    label, threshold = ev["label"], float(ev["threshold"])
    panels = {}
    for when in whens:
        entropy = ev[f"{when}_entropy"]
        groups = {"known classes": entropy[(label >= 0) & (label < classes)]}
        if (label == classes).any():
            groups["unknown"] = entropy[label == classes]
        panels[TITLES[when]] = groups
    title = "known / unknown rejection: predicted unknown above the threshold"
    return figures.save(
        plots.histograms(
            panels,
            threshold if np.isfinite(threshold) else None,
            "normalised entropy of the prediction",
            title,
        ),
        "rejection",
    )


def per_item_bars(run: Run, metric: str, what: str, figures: plots.Figures) -> list:
    """Bars of ``<prefix>/<metric>/<item>`` against ``source_only/<metric>/<item>``."""
    after, before = run.per_item(run.eval_prefix, metric), run.per_item("source_only", metric)
    if not after:
        return [note(f"no per-{what} {metric} in results.json")]
    items = sorted(after)
    earlier = [before.get(i, float("nan")) for i in items] if before else None
    figure = plots.paired_bars(items, earlier, [after[i] for i in items], metric, f"{metric} per {what}")
    return [figures.save(figure, f"{metric}_per_{what}")]


def overlays(run: Run, figures: plots.Figures) -> list:
    if not run.overlays:
        return [note(NO_EVIDENCE.format(path=run.path))]
    return [note("overlays: source-only | adapted | reference")] + [figures.copy(p) for p in run.overlays]


def segmentation(run: Run, figures: plots.Figures) -> list[Section]:
    return [
        Section(
            f"{run.name}: segmentation",
            per_item_bars(run, "dice", "volume", figures) + overlays(run, figures),
        )
    ]


def detection(run: Run, figures: plots.Figures) -> list[Section]:
    return [
        Section(
            f"{run.name}: detection", per_item_bars(run, "ap50", "class", figures) + overlays(run, figures)
        )
    ]


def pose(run: Run, figures: plots.Figures) -> list[Section]:
    return [Section(f"{run.name}: pose",
                    per_item_bars(run, "pck", "joint", figures) + overlays(run, figures))]


BY_TASK = {"classification": classification, "segmentation": segmentation, "detection": detection,
           "pose": pose}
