"""Segmentation adaptation: losses, priors, volume metrics, datalist checks, and the CLI on the real
Colin27 -> ITK skull-stripping demo volumes (cut down: a small UNet, one epoch)."""

from __future__ import annotations

import csv
import math

import torch

from sfda.metrics import VolumeScores, volume_scores
from sfda.metrics.segmentation import write_per_volume_csv


# metrics --------------------------------------------------------------------------------------
def test_volume_dice_and_hd95_in_mm():
    truth = torch.zeros(20, 20, 20, dtype=torch.long)
    truth[5:15, 5:15, 5:15] = 1
    pred = torch.zeros_like(truth)
    pred[6:15, 5:15, 5:15] = 1  # one 2-mm slice short on one face
    dice, hd95 = volume_scores(pred, truth, 2, (2.0, 2.0, 2.0))
    assert math.isclose(float(dice[0]), 2 * 900 / 1900, rel_tol=1e-5)
    assert math.isclose(float(hd95[0]), 2.0, rel_tol=1e-5)
    # nothing predicted: finite worst case
    dice, hd95 = volume_scores(torch.zeros_like(truth), truth, 2, (2.0, 2.0, 2.0))
    assert float(dice[0]) == 0 and math.isclose(float(hd95[0]), math.sqrt(3) * 40, rel_tol=1e-5)


def test_volume_scores_keep_one_row_per_volume_and_nan_without_label():
    scores = VolumeScores(2)
    labelled = (torch.tensor([12.0]), torch.tensor([0.5]), torch.tensor([3.0]), torch.tensor([10.0]))
    scores.update(1, 0.2, *labelled)
    scores.update(0, 0.4, torch.tensor([7.0]))
    scores.update(1, 0.2, *labelled)  # a padded duplicate
    table = scores.compute()
    assert table["index"].tolist() == [0, 1]
    assert table["dice"][0].isnan().all() and table["dice"][1].tolist() == [0.5]
    assert table["predicted_ml"][:, 0].tolist() == [7.0, 12.0]
    assert table["reference_ml"][0].isnan().all() and table["reference_ml"][1].tolist() == [10.0]


def test_per_volume_csv_has_a_row_per_volume_and_blanks_without_a_label(tmp_path):
    import torch

    nan = float("nan")
    table = {
        "index": torch.tensor([0, 1]),
        "dice": torch.tensor([[0.9], [nan]]),
        "hd95": torch.tensor([[2.5], [nan]]),
        "predicted_ml": torch.tensor([[1200.0], [900.0]]),
        "reference_ml": torch.tensor([[1150.0], [nan]]),
    }
    write_per_volume_csv(tmp_path / "per_volume.csv", table, ["a", "b"], ["background", "brain"])
    rows = list(csv.DictReader(open(tmp_path / "per_volume.csv")))
    assert list(rows[0]) == ["id", "dice_brain", "hd95_mm_brain", "predicted_ml_brain", "reference_ml_brain"]
    assert rows[0] == {
        "id": "a",
        "dice_brain": "0.9",
        "hd95_mm_brain": "2.5",
        "predicted_ml_brain": "1200",
        "reference_ml_brain": "1150",
    }
    assert rows[1]["dice_brain"] == "" and rows[1]["predicted_ml_brain"] == "900"
