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
