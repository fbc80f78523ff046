"""The report's one plotting module: matplotlib (Agg, no display) in one style, labelled axes and units.
Every function draws one figure and returns it; ``Figures.save`` writes it as a PNG beside the report.
Task sections only call these; none draws on its own."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

BEFORE, AFTER = "#8c8c8c", "#1f77b4"  # source-only grey, adapted blue, everywhere
STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "figure.constrained_layout.use": True,
}


def pyplot():
    """matplotlib's pyplot on the Agg backend in the report's style (imported only to make a report)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)
    return plt


class Figures:
    """Writes figures as ``<folder>/<nn>_<name>.png`` in the order they are made."""

    def __init__(self, folder: Path):
        self.folder, self.count = Path(folder), 0
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(
            "[0-9][0-9]_*.png"
        ):  # an earlier report's figures, not the user's files
            stale.unlink()

    def next_path(self, name: str) -> Path:
        self.count += 1
        return self.folder / f"{self.count:02d}_{''.join(c if c.isalnum() else '_' for c in name)}.png"

    def save(self, figure, name: str) -> Path:
        path = self.next_path(name)
        figure.savefig(path)
        pyplot().close(figure)
        return path

    def copy(self, png: Path) -> Path:
        """A PNG the run wrote itself (an overlay), copied beside the report."""
        path = self.next_path(png.stem)
        shutil.copyfile(png, path)
        return path


def unit(metric: str) -> str:
    """The unit a metric name implies, for axis labels (``hd95``: mm; ``*_s``: s; else none)."""
    name = metric.rsplit("/", 1)[-1]
    return " (mm)" if name.startswith("hd95") else " (s)" if name.endswith("_s") else ""


def epoch_axis(ax, epochs: list[int]) -> None:
    """x axis in 1-based epochs, integer ticks only."""
    shown = sorted({e + 1 for e in epochs})
    ax.set_xlabel("epoch")
    ax.set_xticks(shown if len(shown) <= 12 else shown[:: -(-len(shown) // 12)])


def curves(series: dict[str, list[tuple[int, float]]], ylabel: str, title: str):
    """One line per entry of ``series`` (``{label: [(epoch, value)]}``, epochs 0-based, drawn 1-based) on
    one axis: the same quantity of several runs."""
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(5.2, 3.0))
    epochs = []
    for label, points in series.items():
        epoch, values = zip(*points, strict=True)
        ax.plot([e + 1 for e in epoch], values, marker="o", markersize=3, label=label)
        epochs += epoch
    epoch_axis(ax, epochs)
    ax.set(ylabel=ylabel, title=title)
    ax.legend(loc="best")
    return figure


def stream_curves(series: dict[str, list[tuple[str, float]]], ylabel: str, title: str):
    """One line per entry of ``series`` (``{run: [(domain, value)]}``) along the stream's domains."""
    plt = pyplot()
    domains = max(series.values(), key=len)
    figure, ax = plt.subplots(figsize=(max(5.2, 0.45 * len(domains)), 3.4))
    for label, points in series.items():
        ax.plot(range(1, len(points) + 1), [v for _, v in points], marker="o", markersize=3, label=label)
    ax.set_xticks(range(1, len(domains) + 1), [name for name, _ in domains], rotation=60, ha="right",
                  fontsize=7)
    ax.set(ylabel=ylabel, title=title)
    ax.legend(loc="best")
    figure.tight_layout()
    return figure


def small_multiples(
    series: dict[str, list[tuple[int, float]]],
    title: str,
    levels: dict[str, float] | None = None,
    columns: int = 3,
):
    """One panel per entry of ``series`` (``{metric: [(epoch, value)]}``), each on its own y scale, with a
    dashed line at ``levels[metric]`` where given (the source-only score)."""
    plt = pyplot()
    rows = -(-len(series) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.5 * rows), squeeze=False)
    for ax in axes.flat[len(series) :]:
        ax.axis("off")
    for ax, (metric, points) in zip(axes.flat, series.items(), strict=False):
        epochs, values = zip(*points, strict=True)
        ax.plot([e + 1 for e in epochs], values, marker="o", markersize=3, color=AFTER, label="this run")
        if levels and metric in levels:
            ax.axhline(levels[metric], color=BEFORE, linestyle="--", linewidth=1, label="source-only")
            ax.legend(loc="best")
        epoch_axis(ax, list(epochs))
        ax.set(title=metric + unit(metric))
    figure.suptitle(title)
    return figure


def paired_bars(names: list[str], before: list[float] | None, after: list[float], ylabel: str, title: str):
    """Grouped bars per name: source-only (grey, when given) and adapted (blue)."""
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(names) + 2), 3.0))
    x, width = np.arange(len(names)), 0.4 if before is not None else 0.6
    if before is not None:
        ax.bar(x - width / 2, before, width, color=BEFORE, label="source-only")
    ax.bar(x + (width / 2 if before is not None else 0), after, width, color=AFTER, label="adapted")
    ax.set_xticks(x, names, rotation=45 if max(map(len, names), default=0) > 3 else 0, ha="right")
    ax.set(ylabel=ylabel, title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


def confusion_pair(matrices: dict[str, np.ndarray], names: list[str], title: str):
    """Row-normalised confusion matrices side by side (``{panel title: (K, K) counts}``, rows: true class)."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(matrices), figsize=(3.4 * len(matrices) + 0.8, 3.4), squeeze=False)
    for ax, (panel, counts) in zip(axes[0], matrices.items(), strict=True):
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
        ax.set_xticks(range(counts.shape[1]), names[: counts.shape[1]], rotation=90)
        ax.set_yticks(range(counts.shape[0]), names[: counts.shape[0]])
        ax.set(xlabel="predicted class", ylabel="true class", title=panel)
        ax.grid(False)
    figure.colorbar(image, ax=list(axes[0]), label="fraction of the true class")
    figure.suptitle(title)
    return figure


def projections(panels: dict[str, tuple[np.ndarray, np.ndarray]], names: list[str], title: str):
    """Scatter plots of 2-D points (``{panel title: (points (M, 2), class ids (M,))}``), coloured by class."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1.2, 3.4), squeeze=False)
    colours = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    for ax, (panel, (points, classes)) in zip(axes[0], panels.items(), strict=True):
        for c in np.unique(classes):
            shown = classes == c
            label = names[c] if c < len(names) else "unknown"
            ax.scatter(
                points[shown, 0], points[shown, 1], s=4, color=colours(int(c) % colours.N), label=label
            )
        ax.set(xlabel="PC 1", ylabel="PC 2", title=panel)
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=3, title="predicted")
    figure.suptitle(title)
    return figure


def histograms(panels: dict[str, dict[str, np.ndarray]], threshold: float | None, xlabel: str, title: str):
    """Overlaid histograms per panel (``{panel title: {group: values}}``) with a vertical threshold line."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.0), squeeze=False)
    bins = np.linspace(0, 1, 41)
    for ax, (panel, groups) in zip(axes[0], panels.items(), strict=True):
        for group, values in groups.items():
            ax.hist(values, bins=bins, alpha=0.6, label=f"{group} ({len(values)})")
        if threshold is not None:
            ax.axvline(
                threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.2f}"
            )
        ax.set(xlabel=xlabel, ylabel="samples", title=panel)
        ax.legend(loc="upper center")
    figure.suptitle(title)
    return figure


def image_grid(images: np.ndarray, captions: list[str], title: str, columns: int = 12):
    """``images (G, H, W, 3)`` uint8 in a grid, one caption under each."""
    plt = pyplot()
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(0.9 * columns, 1.15 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions, strict=False):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(caption, fontsize=7)
    figure.suptitle(title)
    return figure
