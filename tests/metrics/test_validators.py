"""Label-free validators and checkpoint selection by them (a recipe's ``selection``)."""

from __future__ import annotations

import pytest
import torch

from sfda.metrics.validators import VALIDATORS, batch_nuclear_norm, class_ami, get_validator


def one_hot(labels: list[int], classes: int = 3, confidence: float = 0.98) -> torch.Tensor:
    probs = torch.full((len(labels), classes), (1 - confidence) / (classes - 1))
    probs[torch.arange(len(labels)), torch.tensor(labels)] = confidence
    return probs


def test_every_validator_has_a_direction_and_unknown_names_are_refused_with_the_list():
    assert {v.mode for v in VALIDATORS.values()} <= {"max", "min"}
    assert get_validator("label_free/im") is get_validator("im") and get_validator("im").mode == "min"
    with pytest.raises(
        ValueError, match=r"selection.by: unknown validator 'dev'; expected one of label_free/entropy, "
    ):
        get_validator("dev", "selection.by")


def test_bnm_prefers_confident_and_diverse_predictions_over_collapsed_ones():
    diverse, collapsed = one_hot([0, 1, 2] * 10), one_hot([0] * 30)
    uncertain = torch.full((30, 3), 1 / 3)
    assert batch_nuclear_norm(diverse) > batch_nuclear_norm(collapsed) > 0
    assert batch_nuclear_norm(diverse) > batch_nuclear_norm(uncertain)


def test_class_ami_is_one_when_predictions_follow_the_feature_clusters_and_near_zero_when_not():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(40)
    centres = torch.eye(3, 8) * 10
    features = centres[labels] + 0.1 * torch.randn(120, 8, generator=generator)
    assert float(class_ami(features, one_hot(labels.tolist()))) == pytest.approx(1.0, abs=1e-6)
    shuffled = labels[torch.randperm(120, generator=generator)]
    assert abs(float(class_ami(features, one_hot(shuffled.tolist())))) < 0.1


@pytest.mark.ddp
def test_validators_do_not_depend_on_the_number_of_processes(mnist_source, tmp_path):
    from conftest import ROOT, results_on_one_and_two_processes

    recipe = str(ROOT / "recipes/digits/mnist_optdigits/source_only.yaml")
    one, two = results_on_one_and_two_processes(
        tmp_path, "test", "--config", recipe, f"--model.init_args.source={mnist_source}",
        "--data.init_args.eval_subset=255", "--data.init_args.eval_strong_view=true",  # 255: uneven shards
    )
    names = ["entropy", "im", "snd", "bnm", "class_ami", "view_agreement"]
    assert all(f"label_free/{n}" in one for n in names)
    for name in names:
        assert two[f"label_free/{name}"] == pytest.approx(one[f"label_free/{name}"], abs=1e-5), name
