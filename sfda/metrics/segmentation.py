"""Per-volume 3-D Dice and HD95 (mm), gathered across processes.

Scores are computed on the preprocessed grid (RAS, ``VolumeSpec.spacing``), so HD95 is in mm
of that grid. A foreground class the network does not predict at all has no surface: its
HD95 is set to the diagonal of the volume in mm (the largest possible distance) rather than
NaN, so means stay finite; Dice is then 0.
"""

from __future__ import annotations

import math

import torch

from ..pseudo_labels import gather_rows, one_row_per_index


def volume_scores(prediction: torch.Tensor, label: torch.Tensor, num_classes: int,
                  spacing: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``prediction, label (X, Y, Z)`` int -> ``(dice (C-1,), hd95 (C-1,))`` per foreground class.

    Dice sums intersections and cardinalities over the whole volume (3-D Dice, not a mean of
    slices). A class absent from both prediction and label scores Dice 1 and HD95 0.
    """
    from monai.metrics import compute_dice, compute_hausdorff_distance
    from monai.networks.utils import one_hot

    pred = one_hot(prediction[None, None].long().cpu(), num_classes)
    true = one_hot(label[None, None].long().cpu(), num_classes)
    dice = compute_dice(pred, true, include_background=False, ignore_empty=False)[0].float()
    hd95 = torch.zeros(num_classes - 1)
    diagonal = math.sqrt(sum((n * s) ** 2 for n, s in zip(prediction.shape, spacing, strict=True)))
    for k in range(1, num_classes):
        has_pred, has_true = bool(pred[0, k].any()), bool(true[0, k].any())
        if has_pred and has_true:
            hd95[k - 1] = compute_hausdorff_distance(pred[:, [0, k]], true[:, [0, k]],
                                                     include_background=False, percentile=95,
                                                     spacing=list(spacing))[0, 0].float()
        elif has_pred or has_true:
            hd95[k - 1] = diagonal
    return dice, hd95


def class_volumes_ml(labels: torch.Tensor, num_classes: int, spacing: tuple[float, ...]) -> torch.Tensor:
    """``labels (X, Y, Z)`` int -> ``(C-1,)`` volume of each foreground class in millilitres."""
    counts = torch.bincount(labels.flatten().long().cpu(), minlength=num_classes)[1:num_classes].double()
    return (counts * math.prod(spacing) / 1000.0).float()


class VolumeScores:
    """Accumulates one row per volume on each process: its index, the mean voxel entropy of the
    prediction (label-free), the predicted volume of each foreground class (ml) and, where the
    volume has a label, Dice, HD95 and the reference volume per foreground class (NaN without a
    label) and, where given, the summed probability of each class over the volume's voxels (``class_mass``,
    for the pixel class marginal). ``compute`` gathers every process's rows (each volume once); every
    process must call it (a collective under DDP)."""

    FIELDS = ("dice", "hd95", "predicted_ml", "reference_ml")

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self.rows: list[torch.Tensor] = []

    def update(self, index: int, entropy: float, predicted_ml: torch.Tensor, dice: torch.Tensor | None = None,
               hd95: torch.Tensor | None = None, reference_ml: torch.Tensor | None = None,
               class_mass: torch.Tensor | None = None) -> None:
        """One volume; each tensor ``(C-1,)`` per foreground class; None where the volume has no label.
        ``class_mass (C,)``: each class's probability summed over the voxels (None: not measured)."""
        missing = torch.full((self.num_classes - 1,), float("nan"))
        fields = [dice, hd95, predicted_ml, reference_ml]
        values = [missing if f is None else f.float().cpu() for f in fields]
        unmeasured = torch.full((self.num_classes,), math.nan)
        mass = unmeasured if class_mass is None else class_mass.float().cpu()
        self.rows.append(torch.cat([torch.tensor([float(index), float(entropy)]), *values, mass]))

    def compute(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """``{"index": (V,), "entropy": (V,), "dice", "hd95", "predicted_ml", "reference_ml": (V, C-1),
        "class_mass": (V, C)}`` ordered by volume index."""
        k = self.num_classes - 1
        width = 2 + len(self.FIELDS) * k + self.num_classes
        local = torch.stack(self.rows) if self.rows else torch.zeros(0, width)
        rows = gather_rows(local.to(device)).cpu()
        rows = rows[one_row_per_index(rows[:, 0].long())]
        table = {"index": rows[:, 0].long(), "entropy": rows[:, 1]}
        for i, name in enumerate(self.FIELDS):
            table[name] = rows[:, 2 + i * k : 2 + (i + 1) * k]
        table["class_mass"] = rows[:, 2 + len(self.FIELDS) * k :]
        return table


def write_per_volume_csv(path, table: dict[str, torch.Tensor], volume_ids: list[str],
                         class_names: list[str]) -> None:
    """``per_volume.csv``: ``id``, then per foreground class ``dice_<class>``, ``hd95_mm_<class>``,
    ``predicted_ml_<class>``, ``reference_ml_<class>`` (empty where the volume has no label)."""
    import csv

    columns = {"dice": "dice", "hd95": "hd95_mm", "predicted_ml": "predicted_ml",
               "reference_ml": "reference_ml"}
    header = ["id"] + [f"{columns[field]}_{name}" for name in class_names[1:]
                       for field in VolumeScores.FIELDS]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row, index in enumerate(table["index"].tolist()):
            cells = [volume_ids[index]]
            for k in range(len(class_names) - 1):
                for field in VolumeScores.FIELDS:
                    value = float(table[field][row, k])
                    cells.append("" if math.isnan(value) else f"{value:.6g}")
            writer.writerow(cells)
