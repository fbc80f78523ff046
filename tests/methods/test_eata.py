"""EATA and ETA (``sfda.methods.eata``): which samples the entropy and redundancy filters pass on a
constructed batch, the step's loss against a hand computation, the Fisher estimated at the source weights and
its regulariser pulling the weights back to them, the method state returned to its start at a reset (a
reset stream scores its second domain as that domain alone), online errors for every domain through the real
CLI, refusals by field, and 1 and 2 processes adapting alike."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import results_of, run_sfda
from kits.bad_input import DIGIT_SPEC, recipe, sfda, source_artifact
from kits.streams import online as errors
from kits.streams import stream

from sfda.methods.eata import EATA, ETA, eata_selection
from sfda.models import artifact_from_module
from sfda.models.keyed_dropout import dropout_off
from sfda.models.norm import use_batch_statistics

DIGITS = [str(d) for d in range(10)]
FAST = {"name": "adam", "lr": 0.05, "weight_decay": 0.0, "power": 0.0, "backbone_lr_mult": 1.0}



def fit(tmp_path: Path, name: str, method: str, source: Path, data: dict, **init) -> tuple[dict, dict]:
    """results.json and the last checkpoint's state of an in-process ``sfda fit``."""
    config = recipe(tmp_path / f"{name}.yaml", {"class_path": f"sfda.methods.eata.{method}",
                                                "init_args": {"source": str(source), **init}},
                    data, {"default_root_dir": str(tmp_path / name)})
    code, text = sfda("fit", "--config", str(config), "--report_evidence=false")
    assert code == 0, text[-3000:]
    run = tmp_path / name / "version_0"
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return json.loads((run / "results.json").read_text()), state



def adapting(method: EATA) -> EATA:
    """The method as a step sees it: train mode, BatchNorm on batch statistics, no dropout."""
    method.train()
    use_batch_statistics(method.norm_layers)
    dropout_off(method.network)
    return method


@pytest.fixture
def tiny(tmp_path) -> Path:
    return source_artifact(tmp_path / "tiny.pt", DIGITS)


def test_the_filters_keep_reliable_samples_unlike_the_moving_average():
    logits = torch.zeros(5, 10)
    logits[0, 0] = 10.0  # confident, class 0
    logits[1, 3] = 10.0  # confident, class 3
    # row 2 uniform: entropy ln 10, above E0 = 0.4 ln 10
    logits[3, 5] = 5.0  # fairly confident, class 5 (entropy 0.35)
    logits[4, :2] = 10.0  # a tie between classes 0 and 1 (entropy ln 2 = 0.69 < 0.92)
    margin = 0.4 * math.log(10)
    entropies, reliable, selected = eata_selection(logits, None, margin, 0.4)
    assert reliable.tolist() == [True, True, False, True, True]
    assert torch.equal(selected, reliable)  # no moving average yet: nothing is redundant
    assert entropies[2] == pytest.approx(math.log(10))
    assert entropies[4] == pytest.approx(math.log(2), abs=3e-3)  # and 8 classes at e^-10
    average = torch.full((10,), 0.1 / 9)
    average[0] = 0.9  # past predictions were class 0
    _, reliable, selected = eata_selection(logits, average, margin, 0.4)
    # cosine to the average: row 0 ~1.0, row 4 0.72 (redundant); rows 1 and 3 ~0.01 (kept)
    assert selected.tolist() == [False, True, False, True, False]
    _, _, loose = eata_selection(logits, average, margin, 0.8)
    assert loose.tolist() == [False, True, False, True, True]


def test_a_step_minimises_the_weighted_entropy_of_the_selected_samples_and_updates_the_average(tiny):
    method = adapting(EATA(str(tiny), entropy_margin=1.0, redundancy_margin=1.0, fisher_weight=0.0))
    torch.manual_seed(0)
    batch = {"image": 3 * torch.randn(12, 1, 28, 28), "index": torch.arange(12)}
    with torch.no_grad():
        logits = method(batch["image"])[1]
    probs = logits.softmax(1)
    h = -(probs * logits.log_softmax(1)).sum(1)
    margin = math.log(10)
    loss, outputs = method.objective(batch)
    assert torch.allclose(outputs[1], logits)  # the batch is predicted by the forward it adapts on
    assert loss.item() == pytest.approx((torch.exp(margin - h) * h).mean().item(), rel=1e-5)
    assert int(method.probs_updates) == 1 and torch.allclose(method.probs_average, probs.mean(0))
    method.objective(batch)  # the same probabilities again: m <- 0.9 m + 0.1 m
    assert int(method.probs_updates) == 2 and torch.allclose(method.probs_average, probs.mean(0), atol=1e-6)
    method.margin = 1e-3  # nothing reliable: no loss, no step, the average stays
    assert method.objective(batch)[0] is None and int(method.probs_updates) == 2


def test_the_fisher_is_taken_at_the_source_weights_and_pulls_the_weights_back_to_them(tiny):
    method = adapting(EATA(str(tiny), fisher_weight=2.0, fisher_samples=20))
    torch.manual_seed(1)
    batches = [{"image": 3 * torch.randn(12, 1, 28, 28), "index": torch.arange(12)} for _ in range(3)]
    params = method.adapted_parameters()
    source = [p.detach().clone() for p in params]

    def squared_gradient(images):  # by hand, on the network at the source weights
        _, logits = method(images)
        loss = torch.nn.functional.cross_entropy(logits, logits.argmax(1))
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]) ** 2

    expected = [squared_gradient(batches[0]["image"])]
    keep = torch.ones(12, dtype=torch.bool)
    method.estimate_fisher(batches[0], keep)
    assert torch.allclose(method.fisher, expected[0], rtol=1e-5, atol=1e-12)
    expected.append(squared_gradient(batches[1]["image"]))
    with torch.no_grad():  # the weights move away: the estimate stays at the source weights
        for p in params:
            p.add_(0.3)
    method.estimate_fisher(batches[1], keep)
    assert torch.allclose(method.fisher, (expected[0] + expected[1]) / 2, rtol=1e-5, atol=1e-12)
    assert int(method.fisher_seen) == 24 and int(method.fisher_batches) == 2
    before = method.fisher.clone()
    method.estimate_fisher(batches[2], keep)  # 24 >= fisher_samples: the estimate is complete
    assert torch.equal(method.fisher, before)
    # the regulariser's gradient is 2 beta F (theta - theta0): towards the source weights
    penalty = method.fisher_penalty()
    grads = torch.autograd.grad(penalty, params)
    theta = torch.cat([p.detach().reshape(-1) for p in params])
    theta0 = torch.cat([s.reshape(-1) for s in source])
    gradient = torch.cat([g.reshape(-1) for g in grads])
    assert torch.allclose(gradient, 2 * 2.0 * method.fisher * (theta - theta0))
    assert penalty.item() == pytest.approx(2.0 * (method.fisher * 0.09).sum().item(), rel=1e-5)
    optimizer = torch.optim.SGD(params, lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        method.fisher_penalty().backward()
        optimizer.step()
    moved = torch.cat([p.detach().reshape(-1) for p in params])
    assert ((moved - theta0).abs() <= (theta - theta0).abs()).all()
    assert ((moved - theta0).abs() < (theta - theta0).abs()).any()
    # a reset returns the method state to its start; the anchor stays the source weights
    method.probs_average.fill_(0.1)
    method.probs_updates.fill_(4)
    method.reset_method_state()
    assert not method.fisher.any() and int(method.fisher_seen) == int(method.fisher_batches) == 0
    assert not method.probs_average.any() and int(method.probs_updates) == 0
    assert torch.equal(method.anchor, theta0)


def test_a_reset_stream_returns_eata_to_its_start_and_every_domain_is_scored(tmp_path, mnist_source):
    init = {"optim": FAST, "redundancy_margin": 0.4, "fisher_weight": 1.0, "fisher_samples": 32}
    # 3 steps a domain; the last checkpoint is the stream's end
    data = stream("reset_each_shift", checkpoint_every=3)
    reset, after = fit(tmp_path, "reset", "EATA", mnist_source, data, **init)
    data = stream(corruptions=["contrast"], checkpoint_every=3)
    alone, own = fit(tmp_path, "alone", "EATA", mnist_source, data, **init)
    continual, _ = fit(tmp_path, "continual", "ETA", mnist_source, stream(checkpoint_every=3),
                       optim=FAST, redundancy_margin=0.4)
    for results in (reset, continual):
        assert set(errors(results)) == {"online/00_gaussian_noise-5/error", "online/01_contrast-5/error",
                                        "online/error"}
        assert all(0 <= v <= 1 for v in errors(results).values())
    # after the shift: the source weights, no moving average, a Fisher re-estimated on the new domain, so
    # the second domain ends where it ends alone
    assert reset["online/01_contrast-5/error"] == alone["online/00_contrast-5/error"]
    kept = [k for k in own if not k.startswith("stream_")]
    assert {"probs_average", "probs_updates", "anchor", "fisher", "fisher_seen"} <= set(kept)
    assert int(own["probs_updates"]) > 0 and int(own["fisher_seen"]) == 32 and own["fisher"].any()
    for key in kept:
        assert torch.equal(after[key], own[key]), key


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("entropy_margin", 0.0, "a fraction of ln C in (0, 1]"),
    ("redundancy_margin", 1.5, "a cosine similarity in (0, 1]"),
    ("fisher_weight", -1.0, "a weight >= 0"),
    ("fisher_samples", 0, "a sample count >= 1"),
])
def test_bad_arguments_are_refused_by_field(tiny, field, value, expected):
    with pytest.raises(ValueError, match=re.escape(f"model.{field}: expected {expected}")):
        EATA(str(tiny), **{field: value})


def test_a_network_without_norm_layers_is_refused_by_its_source(tmp_path):
    code = tmp_path / "plain.py"
    code.write_text("from torch import nn\n\n\nclass Net(nn.Sequential):\n    def __init__(self):\n"
                    "        super().__init__()\n        self.bottleneck = nn.Sequential(nn.Flatten(), "
                    "nn.Linear(784, 16))\n        self.head = nn.Linear(16, 10)\n")
    target = f"{code}:Net"
    network = torch.nn.Sequential()
    network.bottleneck = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16))
    network.head = torch.nn.Linear(16, 10)
    architecture = {"target": target, "kwargs": {}}
    artifact_from_module(network, DIGITS, DIGIT_SPEC, architecture).save(tmp_path / "p.pt")
    for method in (EATA, ETA):
        with pytest.raises(ValueError, match=f"model.source: {method.__name__} trains normalisation scale"):
            method({"path": str(tmp_path / "p.pt"), "architecture": target})


@pytest.mark.ddp
@pytest.mark.parametrize("method", ["EATA", "ETA"])
def test_two_processes_adapt_as_one_does(method, tmp_path, mnist_source):
    """Selection per sample, means over the global selection, the moving average of the global selection's
    probabilities and the Fisher of the global batch: the online errors, the adapted weights and the method
    state do not depend on the process count. Batches of 15 over 48 images end in a batch of 3."""
    data = stream("reset_each_shift", batch_size=15, checkpoint_every=2)
    init = {"optim": FAST, "redundancy_margin": 0.4}
    if method == "EATA":
        init |= {"fisher_weight": 1.0, "fisher_samples": 40}
    config = recipe(tmp_path / "stream.yaml", {"class_path": f"sfda.methods.eata.{method}",
                                              "init_args": {"source": str(mnist_source), **init}}, data)
    scores, states = [], []
    for name, extra in (("one", []), ("two", ["--trainer.strategy=ddp", "--trainer.devices=2"])):
        run_sfda("fit", "--config", str(config), f"--trainer.default_root_dir={tmp_path / name}", *extra)
        scores.append(errors(results_of(tmp_path / name)))
        last = tmp_path / name / "version_0" / "checkpoints" / "last.ckpt"
        states.append(torch.load(last, weights_only=True)["state_dict"])
    assert len(scores[0]) == 3 and scores[0].keys() == scores[1].keys()
    for key, value in scores[0].items():
        assert scores[1][key] == pytest.approx(value, abs=1e-9), key
    assert states[0].keys() == states[1].keys()
    assert int(states[0]["probs_updates"]) > 0  # something was selected in the last domain
    for key, value in states[0].items():
        assert torch.allclose(states[1][key].float(), value.float(), rtol=1e-4, atol=1e-6), key
