"""Unit tests of the pseudo-label engine against brute-force references."""

import torch

from sfda.pseudo_labels import (
    EMATeacher,
)


def test_ema_teacher_averages_parameters_and_buffers():
    student = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    teacher = EMATeacher(student, momentum=0.5)
    before = teacher.model[0].weight.clone()
    with torch.no_grad():
        student[0].weight.add_(2.0)
        student[1].running_mean.fill_(4.0)
    teacher.update(student)
    assert torch.allclose(teacher.model[0].weight, before + 1.0)
    assert torch.allclose(teacher.model[1].running_mean, torch.full((2,), 2.0))
    assert not any(p.requires_grad for p in teacher.parameters())


def test_momentum_for_share_keeps_that_share_of_the_start_after_the_run():
    from sfda.pseudo_labels.teacher import momentum_for_share

    momentum = momentum_for_share(0.01, 186, "model.source_share")
    assert abs(momentum**186 - 0.01) < 1e-9
    follower, leader = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        follower.weight.fill_(1.0)
        leader.weight.fill_(0.0)
    teacher = EMATeacher(follower, momentum)
    for _ in range(186):
        teacher.update(leader)
    assert abs(float(teacher.model.weight) - 0.01) < 1e-6  # what is left of the start


def test_momentum_and_share_out_of_range_are_refused_by_field():
    import pytest

    from sfda.pseudo_labels.teacher import momentum_for_share

    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"model.ema_momentum: expected an EMA momentum in \(0, 1\)"):
            EMATeacher(torch.nn.Linear(1, 1), bad)
        with pytest.raises(ValueError, match="model.source_share: expected the share"):
            momentum_for_share(bad, 10, "model.source_share")
    with pytest.raises(ValueError, match="model.source_share: the run makes 0 EMA updates"):
        momentum_for_share(0.5, 0, "model.source_share")
