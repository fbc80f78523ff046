"""Online test-time adaptation through the real CLI, in-process, on short corrupted-MNIST streams (real
MNIST test images, corrupted here): the online error per domain is the source model's own error where nothing
adapts, a reset stream scores each domain as if it were alone, a stopped stream resumed from its checkpoint
scores what an unbroken one scores, and what cannot run online is refused by field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import results_of, run_sfda
from kits.bad_input import recipe, sfda
from kits.streams import SHIFTS, online, stream

from sfda.data.stream import CorruptedImages, StreamDataModule
from sfda.data.transforms import InputSpec, build_view, to_tensor
from sfda.methods import TestTimeNorm
from sfda.models import load_artifact
from sfda.models.keyed_dropout import dropout_off
from sfda.report.command import build_report

SPEC = InputSpec(size=28, channels=1, mean=(0.5,), std=(0.5,))



def run(tmp_path: Path, name: str, method: str, source: Path, data: dict, *args: str,
        init: dict | None = None) -> dict:
    config = recipe(tmp_path / f"{name}.yaml", {"class_path": f"sfda.methods.{method}",
                                                "init_args": {"source": str(source), **(init or {})}},
                    data, {"default_root_dir": str(tmp_path / name)})
    code, text = sfda("fit", "--config", str(config), "--report_evidence=false", *args)
    assert code == 0, text[-3000:]
    version = max((tmp_path / name).glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    return json.loads((version / "results.json").read_text()) | {"console": text}



def test_the_source_row_is_the_source_models_own_error_on_each_corrupted_domain(tmp_path, mnist_source):
    results = run(tmp_path, "source", "SourceOnly", mnist_source, stream())
    network = load_artifact(mnist_source).build().eval()
    pipeline = build_view(SPEC, "test")
    data = CorruptedImages("mnist", corruptions=SHIFTS, subset=48)
    for k, shift in enumerate(SHIFTS):  # an independent computation: the artifact's network, image by image
        domain = data.domain(shift, 5)
        images = torch.stack([to_tensor(domain.image(i), SPEC, pipeline) for i in range(48)])
        with torch.no_grad():
            wrong = (network(images)[1].argmax(1).numpy() != domain.labels).mean()
        assert results[f"online/{k:02d}_{shift}-5/error"] == pytest.approx(wrong)
    assert results["online/error"] == pytest.approx(np.mean(list(online(results).values())))
    assert "online 1/2 gaussian_noise-5: error" in results["console"]
    assert "online, mean over 2 domains" in results["console"]


def test_a_reset_stream_scores_each_domain_as_if_it_came_alone_and_a_continual_one_does_not(
        tmp_path, mnist_source):
    # three steps per domain at a high rate: enough to move the model
    fast = {"optim": {"name": "adam", "lr": 0.05, "weight_decay": 0.0, "power": 0.0, "backbone_lr_mult": 1.0}}
    reset = run(tmp_path, "reset", "Tent", mnist_source, stream("reset_each_shift"), init=fast)
    continual = run(tmp_path, "continual", "Tent", mnist_source, stream("continual"), init=fast)
    alone = run(tmp_path, "alone", "Tent", mnist_source, stream(corruptions=["contrast"]), init=fast)
    report = build_report([tmp_path / "reset" / "version_0", tmp_path / "continual" / "version_0"],
                          tmp_path / "report.html").read_text()  # the error along the stream, per run
    figures = {p.name for p in (tmp_path / "report_files").glob("*.png")}
    assert any("compare_stream" in name for name in figures)
    assert any(name.endswith("_stream.png") for name in figures)
    assert "the stream" in report and "contrast-5" in report and "online error" in report
    assert reset["online/00_gaussian_noise-5/error"] == continual["online/00_gaussian_noise-5/error"]
    second = reset["online/01_contrast-5/error"]
    # the same 48 images in the same seeded order (a domain's order depends on the seed and the domain only),
    # from the source weights and fresh optimiser statistics: the same predictions
    assert alone["online/00_contrast-5/error"] == second
    assert continual["online/01_contrast-5/error"] != second


@pytest.mark.parametrize("method", ["Tent", "TestTimeNorm"])  # an optimiser step each batch, and none
def test_a_stream_stopped_part_way_resumes_from_its_checkpoint_and_scores_what_an_unbroken_one_does(
        method, tmp_path, mnist_source):
    data = stream("continual", checkpoint_every=2)  # 6 steps: 3 per domain
    fast = {"optim": {"name": "adam", "lr": 0.05, "weight_decay": 0.0, "power": 0.0,
                      "backbone_lr_mult": 1.0}} if method == "Tent" else {}
    unbroken = run(tmp_path, "unbroken", method, mnist_source, data, init=fast)
    config = recipe(tmp_path / "stopped.yaml", {"class_path": f"sfda.methods.{method}",
                                               "init_args": {"source": str(mnist_source), **fast}},
                    data, {"default_root_dir": str(tmp_path / "stopped")})
    code, text = sfda("fit", "--config", str(config), "--report_evidence=false",
                      "--trainer.callbacks+=kits.faults.RequestStop", "--trainer.callbacks.epoch=0",
                      "--trainer.callbacks.batch=4")  # stopped after the fifth step, in the second domain
    assert code == 143, text[-3000:]
    code, text = sfda("fit", "--config", str(config), "--report_evidence=false", "--ckpt_path", "last")
    assert code == 0, text[-3000:]
    saved = sorted(p.name for p in (tmp_path / "stopped" / "version_0" / "checkpoints").iterdir())
    assert saved == ["epoch=0-stream_step=4.ckpt", "last.ckpt"]  # saved at steps 2 and 4, the newest kept
    resumed = json.loads((tmp_path / "stopped" / "version_1" / "results.json").read_text())
    assert online(resumed) == online(unbroken) and len(online(unbroken)) == 3  # 2 domains and the mean
    assert resumed["online/error"] == unbroken["online/error"]
    assert "online 1/2" not in text and "online 2/2 contrast-5" in text  # the first domain was scored before


def test_test_time_norm_normalises_with_the_batch_and_the_prior_pulls_towards_the_source(mnist_source):
    torch.manual_seed(0)
    images = torch.randn(16, 1, 28, 28) * 2 + 1  # far from the source statistics
    source = load_artifact(mnist_source).build()
    with torch.no_grad():
        source_stats = source.eval()(images)[1]
        source.train()
        dropout_off(source)
        batch_stats = source(images)[1]  # train-mode BatchNorm: this batch's statistics
    for prior, expected in ((0.0, batch_stats), (1e9, source_stats)):
        method = TestTimeNorm(str(mnist_source), prior=prior)
        with torch.no_grad():
            logits = method.network.eval()(images)[1]
        assert torch.allclose(logits, expected, atol=1e-4)
        state = load_artifact(mnist_source).build().state_dict()  # statistics stay the source's
        assert all(torch.equal(v, state[k]) for k, v in method.network.state_dict().items())


def test_what_cannot_run_online_is_refused_by_field(tmp_path, mnist_source):
    config = recipe(tmp_path / "shot.yaml", {"class_path": "sfda.methods.SHOT",
                                            "init_args": {"source": str(mnist_source)}},
                    stream(), {"default_root_dir": str(tmp_path / "shot")})
    code, text = sfda("fit", "--config", str(config))
    assert code != 0 and "SHOT adapts offline over epochs" in text and "no online step" in text
    config = recipe(tmp_path / "tent.yaml", {"class_path": "sfda.methods.Tent",
                                            "init_args": {"source": str(mnist_source)}},
                    stream(), {"default_root_dir": str(tmp_path / "tent"), "max_epochs": 2})
    code, text = sfda("fit", "--config", str(config))
    assert code != 0 and "trainer.max_epochs: an online run passes over its stream once" in text
    config = recipe(tmp_path / "one.yaml", {"class_path": "sfda.methods.TestTimeNorm",
                                           "init_args": {"source": str(mnist_source)}},
                    stream(batch_size=1), {"default_root_dir": str(tmp_path / "one")})
    code, text = sfda("fit", "--config", str(config))
    assert code != 0 and "data.batch_size: TestTimeNorm normalises each batch with its own statistics" in text
    config = recipe(tmp_path / "decay.yaml", {"class_path": "sfda.methods.Tent", "init_args": {
        "source": str(mnist_source), "optim": {"name": "adam", "lr": 0.001, "power": 0.75}}},
        stream(), {"default_root_dir": str(tmp_path / "decay")})
    code, text = sfda("fit", "--config", str(config))
    assert code != 0 and "model.optim.power: an online run keeps its learning rate constant" in text


def test_streams_are_built_from_the_stream_module(mnist_source):
    data = StreamDataModule(CorruptedImages("mnist", corruptions=SHIFTS, subset=8), batch_size=4)
    assert data.num_samples() == 16 and len(data.steps()) == 4


@pytest.mark.ddp
@pytest.mark.parametrize("method", ["Tent", "TestTimeNorm"])
def test_two_processes_score_the_stream_as_one_does(method, tmp_path, mnist_source):
    """Global batch statistics (Tent's BatchNorm through the CLI's synchronised BatchNorm, TestTimeNorm's
    all-reduced sums) and counts summed over processes: the online errors do not depend on the process count.
    Batches of 15 over 48 images end in a batch of 3 (2 + 1 per process)."""
    data = stream("reset_each_shift", batch_size=15)
    fast = {"optim": {"name": "adam", "lr": 0.05, "weight_decay": 0.0, "power": 0.0,
                      "backbone_lr_mult": 1.0}} if method == "Tent" else {}
    config = recipe(tmp_path / "stream.yaml", {"class_path": f"sfda.methods.{method}",
                                              "init_args": {"source": str(mnist_source), **fast}}, data)
    scores = []
    for name, extra in (("one", []), ("two", ["--trainer.strategy=ddp", "--trainer.devices=2"])):
        run_sfda("fit", "--config", str(config), f"--trainer.default_root_dir={tmp_path / name}", *extra)
        scores.append(online(results_of(tmp_path / name)))
    assert len(scores[0]) == 3 and scores[0].keys() == scores[1].keys()
    for key, value in scores[0].items():
        assert scores[1][key] == pytest.approx(value, abs=1e-9), key
