"""SAR (``sfda.methods.sar``): the norm layers it adapts (the official top layers left out), its SAM two-step
update against a hand computation, model recovery to the source weights when the moving average of the loss
falls below its threshold, the method state returned to its start at a reset, online errors for every domain
through the real CLI, refusals by field, and 1 and 2 processes adapting alike."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import results_of, run_sfda
from kits.bad_input import recipe, sfda, source_artifact
from kits.streams import stream

from sfda.data.transforms import InputSpec
from sfda.losses.reliable import softmax_entropy
from sfda.methods.sar import SAR, TOP_LAYERS, under
from sfda.models import SourceClassifier, artifact_from_module, load_artifact
from sfda.models.keyed_dropout import dropout_off
from sfda.models.norm import use_batch_statistics

DIGITS = [str(d) for d in range(10)]
SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "power": 0.0,
       "backbone_lr_mult": 1.0}



def fit(tmp_path: Path, name: str, source: Path, data: dict, **init) -> tuple[dict, dict]:
    """results.json and the last checkpoint's state of an in-process ``sfda fit`` of SAR."""
    config = recipe(tmp_path / f"{name}.yaml", {"class_path": "sfda.methods.SAR",
                                                "init_args": {"source": str(source), **init}},
                    data, {"default_root_dir": str(tmp_path / name)})
    code, text = sfda("fit", "--config", str(config), "--report_evidence=false")
    assert code == 0, text[-3000:]
    run = tmp_path / name / "version_0"
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return json.loads((run / "results.json").read_text()), state


def errors(results: dict) -> dict[str, float]:
    return {k: v for k, v in results.items() if k.startswith("online/") and k.endswith("/error")}


def affine(state: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith("network.network.bottleneck.1.")}


@pytest.fixture
def tiny(tmp_path) -> Path:
    return source_artifact(tmp_path / "tiny.pt", DIGITS)


def test_the_official_top_layers_do_not_adapt(tmp_path):
    assert under("network.backbone.layer4.0.bn1", TOP_LAYERS) and under("net.blocks.9.norm1", TOP_LAYERS)
    assert under("net.norm", TOP_LAYERS) and not under("net.blocks.1.norm1", TOP_LAYERS)
    assert not under("net.fc_norm", TOP_LAYERS) and not under("net.blocks.19.norm1", TOP_LAYERS)
    torch.manual_seed(0)
    kwargs = {"backbone": "resnet18", "num_classes": 10, "in_channels": 3, "input_size": 32,
              "bottleneck_dim": 16}
    spec = InputSpec(size=32, channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    architecture = {"target": "sfda.models.classifier:SourceClassifier", "kwargs": kwargs}
    artifact_from_module(SourceClassifier(**kwargs), DIGITS, spec, architecture).save(tmp_path / "resnet.pt")
    method = SAR(str(tmp_path / "resnet.pt"))
    assert method.adapted and not [n for n in method.adapted if ".layer4." in n]
    assert {n for n in method.adapted if ".layer1." in n}
    assert "network.network.bottleneck.1.weight" in method.adapted
    layer4 = method.network.network.backbone.layer4
    assert not any(p.requires_grad for p in layer4.parameters())
    assert method.normalises_with_the_batch()


def test_the_sam_update_is_the_base_step_with_the_gradient_at_the_perturbed_weights(tiny):
    method = SAR(str(tiny), rho=0.5)
    method.train()
    use_batch_statistics(method.norm_layers)
    dropout_off(method.network)
    torch.manual_seed(0)
    images = 3 * torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        first = softmax_entropy(method(images)[1])
    method.margin = float(first.median())  # about half the samples are reliable
    # by hand, on a copy: g1 at theta, e = rho g1 / |g1|, g2 at theta + e, theta - lr g2
    net = copy.deepcopy(method.network)
    params = [net.network.bottleneck[1].weight, net.network.bottleneck[1].bias]
    theta = [p.detach().clone() for p in params]
    h1 = softmax_entropy(net(images)[1])
    reliable = h1 < method.margin
    g1 = torch.autograd.grad(h1[reliable].mean(), params)
    norm = torch.sqrt(sum((g * g).sum() for g in g1))
    with torch.no_grad():
        for p, g in zip(params, g1, strict=True):
            p.add_(0.5 * g / norm)
    h2 = softmax_entropy(net(images)[1])
    again = reliable & (h2 < method.margin)
    g2 = torch.autograd.grad(h2[again].mean(), params)
    expected = [t - 0.1 * g for t, g in zip(theta, g2, strict=True)]
    assert 0 < int(again.sum()) <= int(reliable.sum()) < 16

    optimizer = torch.optim.SGD(method.adapted_parameters(), lr=0.1, momentum=0.9)
    outputs, value, count = method.sharpness_aware_update(
        {"image": images, "index": torch.arange(16)}, optimizer, lambda loss: loss.backward())
    assert torch.allclose(softmax_entropy(outputs[1]), h1)  # predicted by the first forward
    assert count == int(again.sum()) and value.item() == pytest.approx(h2[again].mean().item(), rel=1e-5)
    for p, e in zip(method.adapted_parameters(), expected, strict=True):
        assert torch.allclose(p, e, atol=1e-6)
    assert not torch.allclose(expected[0], theta[0])


def test_recovery_returns_to_the_source_weights_when_the_loss_average_falls_below_the_threshold(
        tmp_path, mnist_source):
    data = stream(checkpoint_every=6)  # 6 steps: the last checkpoint is the end of the stream
    source = {f"network.network.{k}": v for k, v in load_artifact(mnist_source).state_dict.items()}
    # a threshold above any entropy: every step ends in a recovery
    results, state = fit(tmp_path, "always", mnist_source, data, optim=SGD, recovery_threshold=100.0)
    assert results["sar/recoveries"] == 6.0
    for key, value in affine(state).items():
        assert torch.equal(value, source[key]), key
    assert int(state["loss_updates"]) == 0 and int(state["recoveries"]) == 6
    # never: the weights adapt and the average is kept
    results, state = fit(tmp_path, "never", mnist_source, data, optim=SGD, recovery_threshold=0.0)
    assert results["sar/recoveries"] == 0.0 and int(state["loss_updates"]) == 6
    assert any(not torch.equal(v, source[k]) for k, v in affine(state).items())
    assert 0 < float(state["loss_average"]) < 0.4 * math.log(10)
    assert set(errors(results)) == {"online/00_gaussian_noise-5/error", "online/01_contrast-5/error",
                                    "online/error"}


def test_a_reset_stream_returns_sar_to_its_start_at_each_shift(tmp_path, mnist_source):
    # 3 steps a domain; the last checkpoint is the stream's end
    reset, after = fit(tmp_path, "reset", mnist_source, stream("reset_each_shift", checkpoint_every=3),
                       optim=SGD)
    alone, own = fit(tmp_path, "alone", mnist_source, stream(corruptions=["contrast"], checkpoint_every=3),
                     optim=SGD)
    # after the shift: the source weights, no loss average, fresh optimiser statistics, so the second domain
    # ends where it ends alone (recoveries are a count of the run, not state)
    assert reset["online/01_contrast-5/error"] == alone["online/00_contrast-5/error"]
    assert int(own["loss_updates"]) > 0
    for key in [k for k in own if not k.startswith("stream_") and k != "recoveries"]:
        assert torch.equal(after[key], own[key]), key
    method = SAR(str(mnist_source))
    method.loss_average.fill_(0.5)
    method.loss_updates.fill_(3)
    method.recoveries.fill_(2)
    method.reset_method_state()
    assert float(method.loss_average) == 0 and int(method.loss_updates) == 0 and int(method.recoveries) == 2


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("entropy_margin", 1.5, "a fraction of ln C in (0, 1]"),
    ("rho", 0.0, "a neighbourhood radius > 0"),
    ("recovery_threshold", -0.1, "an entropy >= 0"),
    ("skip_layers", ("bottleneck",), None),
])
def test_bad_arguments_are_refused_by_field(tiny, field, value, expected):
    match = f"model.{field}: " + (f"expected {expected}" if expected else "every normalisation layer")
    match = re.escape(match)
    with pytest.raises(ValueError, match=match):
        SAR(str(tiny), **{field: value})


@pytest.mark.ddp
def test_two_processes_adapt_as_one_does(tmp_path, mnist_source):
    """Reliable samples per sample, means and the loss average over the global batch, gradients averaged by
    DDP for both of SAM's passes: the online errors, the adapted weights and the method state do not depend on
    the process count. Batches of 15 over 48 images end in a batch of 3."""
    data = stream("reset_each_shift", batch_size=15, checkpoint_every=2)
    config = recipe(tmp_path / "stream.yaml", {"class_path": "sfda.methods.SAR", "init_args": {
        "source": str(mnist_source), "optim": SGD, "recovery_threshold": 0.3}}, data)
    scores, states = [], []
    for name, extra in (("one", []), ("two", ["--trainer.strategy=ddp", "--trainer.devices=2"])):
        run_sfda("fit", "--config", str(config), f"--trainer.default_root_dir={tmp_path / name}", *extra)
        scores.append(errors(results_of(tmp_path / name)))
        last = tmp_path / name / "version_0" / "checkpoints" / "last.ckpt"
        states.append(torch.load(last, weights_only=True)["state_dict"])
    assert len(scores[0]) == 3 and scores[0].keys() == scores[1].keys()
    for key, value in scores[0].items():
        assert scores[1][key] == pytest.approx(value, abs=1e-9), key
    assert int(states[0]["loss_updates"]) > 0 or int(states[0]["recoveries"]) > 0
    for key, value in states[0].items():
        assert torch.allclose(states[1][key].float(), value.float(), rtol=1e-4, atol=1e-6), key
