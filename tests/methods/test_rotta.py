"""RoTTA: the memory bank keeps classes balanced and drops the oldest (or the most uncertain), the robust
BatchNorm's statistics follow the EMA formula, a reset empties the bank and returns the teacher to the source,
what cannot work is refused by field; through the real CLI on short corrupted-MNIST streams (real MNIST test
images): the student updates once every ``update_frequency`` samples (mid-batch too), every domain is scored,
a reset stream scores its second domain as if it came alone, a stopped stream resumes to the scores of an
unbroken one, and 2 processes score what 1 does."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import results_of, run_sfda
from kits.bad_input import DIGIT_SPEC, recipe, sfda, source_artifact
from torch import nn

from sfda.methods.rotta import RoTTA
from sfda.models.robust_norm import RobustBatchNorm, use_robust_batch_norm
from sfda.pseudo_labels.memory import CategoryBalancedMemory, timeliness_weights

DIGITS = [str(d) for d in range(10)]
SHIFTS = ["gaussian_noise", "fog"]  # the source errs on fog, and a moved model errs differently
# updates every 24 samples (batches of 16: after the 2nd, mid-3rd, 5th and mid-6th step's samples) at a rate
# and teacher rate that move the predictions within a 96-image stream (the official 64 and 0.001 would not)
FAST = {"optim": {"name": "adam", "lr": 0.05, "weight_decay": 0.0, "power": 0.0, "backbone_lr_mult": 1.0},
        "memory_size": 24, "update_frequency": 24, "nu": 0.5}


def stream(setting: str = "continual", subset: int = 48, corruptions=SHIFTS, **extra) -> dict:
    source = {"class_path": "sfda.data.CorruptedImages",
              "init_args": {"dataset": "mnist", "corruptions": list(corruptions), "subset": subset}}
    return {"class_path": "sfda.data.StreamDataModule",
            "init_args": {"source": source, "setting": setting, "batch_size": 16, **extra}}


def run(tmp_path: Path, name: str, source: Path, data: dict, *args: str, init: dict | None = None) -> dict:
    config = recipe(tmp_path / f"{name}.yaml", {"class_path": "sfda.methods.rotta.RoTTA",
                                                "init_args": {"source": str(source), **(init or {})}},
                    data, {"default_root_dir": str(tmp_path / name)})
    code, text = sfda("fit", "--config", str(config), "--report_evidence=false", *args)
    assert code == 0, text[-3000:]
    version = max((tmp_path / name).glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    return json.loads((version / "results.json").read_text()) | {"console": text, "version": str(version)}


def online(results: dict) -> dict[str, float]:
    return {k: v for k, v in results.items() if k.startswith("online/") and k.endswith("/error")}


# the memory bank -------------------------------------------------------------------------------------------
def offer(memory: CategoryBalancedMemory, labels: list[int], uncertainty: float | list[float] = 0.0) -> None:
    """Offer samples of ``labels`` (sample k filled with its global index, the count offered before it)."""
    shape = tuple(memory.samples.shape[1:])
    for k, label in enumerate(labels):
        u = uncertainty[k] if isinstance(uncertainty, list) else uncertainty
        memory.add(torch.full(shape, float(memory.seen)), label, u, index=int(memory.seen))


def held(memory: CategoryBalancedMemory) -> dict[int, list[int]]:
    """Class -> global indices held, oldest first."""
    _, _, index = memory.contents()
    classes = memory.classes[memory.classes >= 0]
    out: dict[int, list[int]] = {}
    for c, i in zip(sorted(classes.tolist()), index.tolist(), strict=True):
        out.setdefault(c, []).append(i)
    return out


def test_the_memory_bank_keeps_classes_balanced_and_drops_the_oldest():
    memory = CategoryBalancedMemory(capacity=4, num_classes=2, sample_shape=(1, 2, 2), lambda_u=0.0)
    offer(memory, [0] * 10)  # a long run of one class fills only its quota (4 / 2)
    assert held(memory) == {0: [8, 9]} and memory.counts().tolist() == [2, 0]
    offer(memory, [1, 1, 1])  # the other class fills its quota, then replaces its own oldest
    assert held(memory) == {0: [8, 9], 1: [11, 12]}
    samples, ages, index = memory.contents()
    assert samples[:, 0, 0, 0].tolist() == [8.0, 9.0, 11.0, 12.0]  # each sample kept with its index
    # ages count the samples offered since each was kept, its own offer included (the official order)
    assert (ages * 4).tolist() == [5.0, 4.0, 2.0, 1.0]
    assert torch.allclose(timeliness_weights(ages), 1 / (1 + torch.exp(ages)))
    # a fractional quota (5 / 2): a class may hold 3; a full bank makes room from the majority class
    memory = CategoryBalancedMemory(capacity=5, num_classes=2, sample_shape=(1, 2, 2), lambda_u=0.0)
    offer(memory, [0, 0, 0, 1, 1])
    assert memory.counts().tolist() == [3, 2]
    offer(memory, [1])
    assert held(memory) == {0: [1, 2], 1: [3, 4, 5]}  # the majority's oldest left


def test_the_memory_bank_drops_the_most_uncertain_and_refuses_what_scores_above_all():
    memory = CategoryBalancedMemory(capacity=2, num_classes=2, sample_shape=(1, 2, 2), lambda_t=0.0)
    offer(memory, [0], [0.5])
    offer(memory, [0], [0.1])  # class 0 at its quota (1): the more uncertain one leaves
    assert held(memory) == {0: [1]}
    offer(memory, [0], [0.3])  # scores above the held sample: dropped, though the bank has a free slot
    assert held(memory) == {0: [1]} and int(memory.seen) == 3
    score = 0.1 / math.log(2)
    assert memory.scores()[memory.classes == 0].item() == pytest.approx(score)
    copy = CategoryBalancedMemory(capacity=2, num_classes=2, sample_shape=(1, 2, 2), lambda_t=0.0)
    copy.load_state_dict(memory.state_dict())  # a checkpoint restores the bank exactly
    offer(memory, [1, 0], [0.2, 0.05])
    offer(copy, [1, 0], [0.2, 0.05])
    assert all(torch.equal(a, b) for a, b in zip(memory.state_dict().values(), copy.state_dict().values(),
                                                  strict=True))
    memory.reset()
    assert held(memory) == {} and int(memory.seen) == 0


# robust BatchNorm ------------------------------------------------------------------------------------------
def test_the_robust_batchnorm_statistics_follow_the_ema_formula():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
    bn.running_var.copy_(torch.tensor([2.0, 0.5, 1.0]))
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, 0.5, 1.0]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
    network = nn.Sequential(nn.Conv2d(3, 3, 1), bn)
    keys = set(network.state_dict())
    (robust,) = use_robust_batch_norm(network, momentum=0.05)
    assert isinstance(network[1], RobustBatchNorm) and set(network.state_dict()) == keys
    x = torch.randn(8, 3, 5, 5) * 3 + 1
    robust.eval()
    eval_out = robust(x)
    assert torch.allclose(eval_out, nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight,
                                                             bn.bias, False, 0.0, bn.eps), atol=1e-5)
    assert torch.equal(robust.running_mean, bn.running_mean)  # evaluation leaves the statistics alone
    robust.train()
    out = robust(x)
    mean = 0.95 * bn.running_mean + 0.05 * x.mean(dim=(0, 2, 3))
    var = 0.95 * bn.running_var + 0.05 * x.var(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(robust.running_mean, mean, atol=1e-6)
    assert torch.allclose(robust.running_var, var, atol=1e-6)
    expected = (x - mean.view(1, 3, 1, 1)) / torch.sqrt(var.view(1, 3, 1, 1) + bn.eps)
    assert torch.allclose(out, expected * bn.weight.view(1, 3, 1, 1) + bn.bias.view(1, 3, 1, 1), atol=1e-5)
    out.sum().backward()
    assert robust.weight.grad is not None and robust.bias.grad is not None


# the method -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    return source_artifact(tmp_path_factory.mktemp("rotta") / "lenet.pt", DIGITS)


class NoNorm(nn.Module):
    """A classifier without BatchNorm."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU())
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.features(x))


def test_what_cannot_work_is_refused_by_field(digits, tmp_path):
    torch.save(NoNorm().state_dict(), tmp_path / "plain.pt")
    plain = {"architecture": "tests.methods.test_rotta:NoNorm", "weights": str(tmp_path / "plain.pt"),
             "class_names": DIGITS, "input": DIGIT_SPEC.to_dict(), "feature_layer": "features",
             "head_layer": "head"}
    refusal = ("model.source: RoTTA replaces BatchNorm by robust BatchNorm, but the classification network "
               "(FeatureClassifier) has no BatchNorm layer")
    with pytest.raises(ValueError, match=re.escape(refusal)):
        RoTTA(plain)
    for field, value, expected in (("nu", 1.0, "an EMA rate in (0, 1)"),
                                   ("memory_size", 0, "a capacity >= 1"),
                                   ("update_frequency", 0, "a sample count >= 1"),
                                   ("bn_momentum", 0.0, "a momentum in (0, 1]"),
                                   ("lambda_u", -1.0, "a weight >= 0")):
        with pytest.raises(ValueError, match=re.escape(f"model.{field}: expected {expected}")):
            RoTTA(str(digits), **{field: value})


def test_a_reset_empties_the_bank_and_returns_the_teacher_to_the_source(digits):
    method = RoTTA(str(digits), memory_size=8)
    method.__dict__["_source_state"] = {k: v.clone() for k, v in method.network.state_dict().items()}
    assert not method.normalises_with_the_batch()
    source = {k: v.clone() for k, v in method.teacher.model.state_dict().items()}
    with torch.no_grad():
        for p in method.teacher.model.parameters():
            p.mul_(0.5)
        method.teacher.model.train()(torch.randn(8, 1, 28, 28))  # its robust statistics move
    offer(method.memory, [1, 2, 3])
    method.reset_method_state()
    assert all(torch.equal(v, source[k]) for k, v in method.teacher.model.state_dict().items())
    assert int(method.memory.seen) == 0 and int((method.memory.classes >= 0).sum()) == 0


def test_the_teacher_follows_the_student_parameters_by_ema_and_keeps_its_own_statistics(digits):
    method = RoTTA(str(digits), nu=0.1)
    with torch.no_grad():
        for p in method.network.parameters():
            p.add_(1.0)
        method.network.train()(torch.randn(8, 1, 28, 28))  # the student's robust statistics move
    student = {k: v.clone() for k, v in method.network.state_dict().items()}
    teacher = {k: v.clone() for k, v in method.teacher.model.state_dict().items()}
    parameters = {name for name, _ in method.network.named_parameters()}
    method.follow_student()
    for key, value in method.teacher.model.state_dict().items():
        expected = 0.9 * teacher[key] + 0.1 * student[key] if key in parameters else teacher[key]
        assert torch.allclose(value.float(), expected.float(), atol=1e-6), key
    assert not torch.equal(student["network.bottleneck.1.running_mean"],
                           teacher["network.bottleneck.1.running_mean"])


@pytest.fixture(scope="module")
def continual(tmp_path_factory, mnist_source) -> dict:
    """An unbroken continual stream run (96 images, 3 steps per domain, a checkpoint every 2)."""
    return run(tmp_path_factory.mktemp("continual"), "unbroken", mnist_source,
               stream("continual", checkpoint_every=2), init=FAST)


def test_the_student_updates_once_every_update_frequency_samples_and_every_domain_is_scored(continual):
    last = torch.load(Path(continual["version"]) / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 96 // 24  # optimiser steps: one per 24 samples, mid-batch ones included
    state = last["state_dict"]
    assert int(state["memory.seen"]) == 96 and int((state["memory.classes"] >= 0).sum()) > 0
    assert set(online(continual)) == {"online/00_gaussian_noise-5/error", "online/01_fog-5/error",
                                      "online/error"}
    assert "online 2/2 fog-5: error" in continual["console"]


def test_a_reset_stream_scores_its_second_domain_as_if_it_came_alone(tmp_path, mnist_source, continual):
    reset = run(tmp_path, "reset", mnist_source, stream("reset_each_shift"), init=FAST)
    alone = run(tmp_path, "alone", mnist_source, stream(corruptions=["fog"]), init=FAST)
    assert reset["online/00_gaussian_noise-5/error"] == continual["online/00_gaussian_noise-5/error"]
    # the teacher, the student, the bank (and its update count) and the optimiser back at their start; the
    # strong augmentations are keyed by the count of samples offered, which restarts with the bank
    assert reset["online/01_fog-5/error"] == alone["online/00_fog-5/error"]
    assert continual["online/01_fog-5/error"] != reset["online/01_fog-5/error"]


@pytest.mark.slow  # two CLI runs and a resume: the protocol's own resume test is in the fast tier
def test_a_stream_stopped_part_way_resumes_from_its_checkpoint_and_scores_what_an_unbroken_one_does(
        tmp_path, mnist_source, continual):
    data = stream("continual", checkpoint_every=2)
    config = recipe(tmp_path / "stopped.yaml", {"class_path": "sfda.methods.rotta.RoTTA",
                                               "init_args": {"source": str(mnist_source), **FAST}},
                    data, {"default_root_dir": str(tmp_path / "stopped")})
    code, text = sfda("fit", "--config", str(config), "--report_evidence=false",
                      "--trainer.callbacks+=kits.faults.RequestStop", "--trainer.callbacks.epoch=0",
                      "--trainer.callbacks.batch=4")  # stopped after the fifth step, in the second domain
    assert code == 143, text[-3000:]
    code, text = sfda("fit", "--config", str(config), "--report_evidence=false", "--ckpt_path", "last")
    assert code == 0, text[-3000:]
    version = tmp_path / "stopped" / "version_1"
    resumed = json.loads((version / "results.json").read_text())
    assert online(resumed) == online(continual) and len(online(continual)) == 3
    unbroken = torch.load(Path(continual["version"]) / "checkpoints" / "last.ckpt", weights_only=True)
    last = torch.load(version / "checkpoints" / "last.ckpt", weights_only=True)
    for key in ("memory.samples", "memory.ages", "memory.index", "teacher.model.network.head.bias"):
        assert torch.equal(last["state_dict"][key], unbroken["state_dict"][key]), key


@pytest.mark.ddp
def test_two_processes_score_the_stream_as_one_does(tmp_path, mnist_source):
    """The bank filled from the gathered global batch on every process, the update computed on all of it on
    each (so the averaged gradient is that update), strong augmentations keyed by the samples offered: the
    online errors do not depend on the process count. Batches of 15 over 48 images (8 + 7 a process, then
    2 + 1)."""
    config = recipe(tmp_path / "stream.yaml", {"class_path": "sfda.methods.rotta.RoTTA",
                                              "init_args": {"source": str(mnist_source), **FAST}},
                    stream("continual", batch_size=15))
    scores, states = [], []
    for name, extra in (("one", []), ("two", ["--trainer.strategy=ddp", "--trainer.devices=2"])):
        run_sfda("fit", "--config", str(config), f"--trainer.default_root_dir={tmp_path / name}", *extra)
        scores.append(online(results_of(tmp_path / name)))
        states.append(torch.load(tmp_path / name / "version_0" / "checkpoints" / "last.ckpt",
                                 weights_only=True)["state_dict"])
    assert len(scores[0]) == 3 and scores[0] == scores[1]
    assert torch.equal(states[0]["memory.index"], states[1]["memory.index"])  # the same bank
    assert torch.equal(states[0]["memory.classes"], states[1]["memory.classes"])
    gap = max(float((states[0][k].float() - states[1][k].float()).abs().max()) for k in states[0])
    assert gap < 1e-4, gap  # float rounding only
