"""Universal DA: class-split protocols, H-score, GLC engine pieces against references, SHOT-O/GLC runs."""

import math

import numpy as np
import torch

from sfda.metrics import ClassificationScores, scores_from_confusion


# metrics ---------------------------------------------------------------------------------------
def test_h_score_matches_its_definition():
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2, -1])  # 2 known classes, unknown = 2, one unlabelled
    preds = torch.tensor([0, 1, 1, 1, 2, 2, 2, 0, 1, 0])
    metric = ClassificationScores(2)
    metric.update(preds[:5], labels[:5])
    metric.update(preds[5:], labels[5:])
    out = metric.compute()
    a_k = (1 / 2 + 2 / 3) / 2
    a_u = 2 / 4
    assert math.isclose(out["known_acc"], a_k, rel_tol=1e-6)
    assert math.isclose(out["unknown_acc"], a_u, rel_tol=1e-6)
    assert math.isclose(out["h_score"], 2 * a_k * a_u / (a_k + a_u), rel_tol=1e-6)
    assert math.isclose(out["acc"], 5 / 9, rel_tol=1e-6)


def test_closed_set_scores_are_accuracy_and_mean_per_class_accuracy():
    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, 5, 500), rng.integers(0, 5, 500)
    matrix = torch.zeros(6, 6, dtype=torch.long)
    for y, p in zip(labels, preds, strict=True):
        matrix[y, p] += 1
    out = scores_from_confusion(matrix)
    assert "h_score" not in out
    assert math.isclose(out["acc"], (labels == preds).mean(), rel_tol=1e-6)
    assert math.isclose(out["acc_per_class"], np.mean([(preds[labels == c] == c).mean() for c in range(5)]),
                        rel_tol=1e-6)
