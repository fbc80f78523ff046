"""Segmentation adaptation: losses, priors, volume metrics, datalist checks, and the CLI on the real
Colin27 -> ITK skull-stripping demo volumes (cut down: a small UNet, one epoch)."""

from __future__ import annotations

import math

import pytest
import torch

from sfda.pseudo_labels import (
    ConstantSizes,
    ImageSizes,
    SourceEstimate,
    estimated_prior,
    prior_from_sizes,
)


# priors ---------------------------------------------------------------------------------------
def test_prior_from_sizes_puts_the_remainder_in_background():
    table = prior_from_sizes(torch.tensor([0.2, 0.1]),
                             torch.tensor([[True, True], [False, True], [False, False]]))
    assert torch.allclose(table, torch.tensor([[0.7, 0.2, 0.1], [0.9, 0.0, 0.1], [1.0, 0.0, 0.0]]))


def test_constant_sizes_with_csv_tags_and_a_missing_id(tmp_path):
    tags = tmp_path / "tags.csv"
    tags.write_text("id,brain\nv:2:0,0\nv:2:1,1\n")
    table = ConstantSizes([0.3], str(tags)).table(["v:2:0", "v:2:1"], ["background", "brain"])
    assert torch.allclose(table, torch.tensor([[1.0, 0.0], [0.7, 0.3]]))
    with pytest.raises(KeyError, match=r"tags.csv: no row for 1 sample ids, e.g. \['v:2:7'\]"):
        ConstantSizes([0.3], str(tags)).table(["v:2:0", "v:2:7"], ["background", "brain"])
    with pytest.raises(ValueError, match="model.prior.sizes: expected 1 foreground sizes"):
        ConstantSizes([0.3, 0.1]).table(["v:2:0"], ["background", "brain"])


def tag_odd_slices(sample_id: str) -> list[str]:
    return ["brain"] if int(sample_id.rsplit(":", 1)[1]) % 2 else []


def test_constant_sizes_with_callable_tags():
    table = ConstantSizes([0.25], "tests.pseudo_labels.test_priors:tag_odd_slices").table(
        ["v:2:0", "v:2:1"], ["background", "brain"])
    assert torch.allclose(table, torch.tensor([[1.0, 0.0], [0.75, 0.25]]))


def test_constant_sizes_with_label_free_tags_from_source_predictions():
    provider = ConstantSizes([0.25], "source_predictions", min_fraction=0.01)
    assert provider.needs == "source_predictions" and ConstantSizes([0.25]).needs == "nothing"
    # predicted sizes, not the constant used
    fractions = torch.tensor([[0.6, 0.4], [0.995, 0.005], [0.98, 0.02]])
    table = provider.table(["a", "b", "c"], ["background", "brain"], fractions)
    assert torch.allclose(table, torch.tensor([[0.75, 0.25], [1.0, 0.0], [0.75, 0.25]]))
    with pytest.raises(ValueError,
                       match=r"model.prior.min_fraction: expected a predicted fraction in \[0, 1\), got 5"):
        ConstantSizes([0.25], "source_predictions", min_fraction=5)
    with pytest.raises(ValueError, match="neither a .csv file, 'source_predictions' nor an importable"):
        ConstantSizes([0.25], "source_prediction").table(["a"], ["background", "brain"])


def test_image_sizes_csv_and_its_errors(tmp_path):
    sizes = tmp_path / "sizes.csv"
    sizes.write_text("id,brain\na,0.4\nb,0.0\n")
    assert torch.allclose(ImageSizes(str(sizes)).table(["b", "a"], ["background", "brain"]),
                          torch.tensor([[1.0, 0.0], [0.6, 0.4]]))
    (tmp_path / "bad.csv").write_text("id,tumour\na,0.4\n")
    with pytest.raises(ValueError, match=r"bad.csv: sizes CSV lacks columns \['brain'\]"):
        ImageSizes(str(tmp_path / "bad.csv")).table(["a"], ["background", "brain"])
    with pytest.raises(FileNotFoundError, match="missing.csv: sizes CSV not found"):
        ImageSizes(str(tmp_path / "missing.csv")).table(["a"], ["background", "brain"])


def test_source_estimate_tags_present_classes_and_averages_their_size():
    fractions = torch.tensor([[0.7, 0.3], [0.9, 0.1], [0.995, 0.005]])
    table = SourceEstimate(min_fraction=0.01).table(["a", "b", "c"], ["background", "brain"], fractions)
    assert torch.allclose(table, torch.tensor([[0.8, 0.2], [0.8, 0.2], [1.0, 0.0]]))


def test_estimated_prior_is_a_distribution_from_argmax_counts():
    probs = torch.tensor([[0.9, 0.1, 0.0]] * 3 + [[0.1, 0.9, 0.0]])
    prior = estimated_prior(probs)
    assert math.isclose(prior.sum().item(), 1.0, rel_tol=1e-6) and prior[0] > prior[1] > prior[2] > 0
