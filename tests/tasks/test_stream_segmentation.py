"""The medical stream: MR scanner artifacts on the real ITK head volume, its slices scored online by a Dice
pooled per domain, and the online methods that run on segmentation (source, BN-1, Tent, CoTTA) through the
real CLI on it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import results_of, run_sfda
from kits.bad_input import recipe, sfda

from sfda.data.stream import StreamDataModule
from sfda.data.stream_volumes import ARTIFACTS, ArtifactVolumes, scanner_artifact
from sfda.data.volumes import VolumeSpec
from sfda.models import load_artifact
from sfda.report.command import build_report
from sfda.tasks.segmentation import SegmentationTask

SPEC = VolumeSpec(mode="2d", roi=(128, 128), spacing=(2.0, 2.0, 2.0), intensity_percentiles=(1.0, 99.0),
                  slice_axis=2)
NAMES = ["background", "brain"]


def head(seed: int = 0) -> torch.Tensor:
    """A smooth (1, 24, 24, 12) volume in [0, 1]: a bright ellipsoid with texture."""
    grid = torch.stack(torch.meshgrid(*(torch.linspace(-1, 1, n) for n in (24, 24, 12)), indexing="ij"))
    inside = ((grid**2).sum(0) < 0.6).float()
    texture = torch.from_numpy(np.random.default_rng(seed).uniform(0, 0.2, (24, 24, 12))).float()
    return (0.2 + 0.6 * inside + texture)[None].clamp(0, 1)


@pytest.mark.parametrize("name", list(ARTIFACTS))
def test_each_artifact_is_seeded_and_grows_with_its_severity(name):
    image = head()
    changes = []
    for severity in (1, 3, 5):
        out = scanner_artifact(image, name, severity, seed=7)
        assert out.shape == image.shape and out.dtype == torch.float32
        assert torch.equal(out, scanner_artifact(image, name, severity, seed=7))  # the seed fixes it
        changes.append(float((out - image).abs().mean()))
    assert 0 < changes[0] < changes[1] < changes[2], changes


def test_artifact_names_and_severities_are_refused_by_field():
    with pytest.raises(ValueError, match="data.source.artifacts: unknown MR artifact 'motion'"):
        ArtifactVolumes("demo://skull_stripping/itk.json", NAMES, artifacts=["motion"])
    with pytest.raises(ValueError, match="data.severities: expected severities in 1-5, got 6"):
        scanner_artifact(head(), "gibbs", 6, seed=0)
    with pytest.raises(ValueError, match="data.severities: expected severities in 1-5, got 0"):
        StreamDataModule(ArtifactVolumes("demo://skull_stripping/itk.json", NAMES), severities=[0])


def test_the_online_dice_is_pooled_over_a_domains_pixels():
    task = SegmentationTask(NAMES, SPEC)
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 2, (3, 128, 128)))
    logits = torch.from_numpy(rng.normal(size=(3, 2, 128, 128))).float()
    keep = torch.tensor([True, False, True])
    counts = task.online_counts(None, logits, labels, keep)
    predicted, truth = logits[keep].argmax(1) == 1, labels[keep] == 1
    expected = 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
    scores = task.online_scores(counts)
    assert scores["dice"] == pytest.approx(float(expected)) == scores["dice_brain"]
    assert scores["samples"] == 2
    assert task.online_scores(torch.zeros(2, 3, dtype=torch.int64)) == {"samples": 0.0}


def test_a_segmentation_stream_cannot_sort_its_labels_by_class():
    data = StreamDataModule(ArtifactVolumes("demo://skull_stripping/itk.json", NAMES, artifacts=["gibbs"]),
                            label_order="correlated", input=SPEC)
    with pytest.raises(ValueError, match="data.label_order: a segmentation stream's labels are masks"):
        data.steps()


def test_a_medical_stream_takes_a_2d_volume_spec_only():
    with pytest.raises(ValueError, match="data.input: a medical stream slices volumes for a 2-D"):
        ArtifactVolumes("demo://skull_stripping/itk.json", NAMES).use_input(
            VolumeSpec(mode="3d", roi=(32, 32, 32), spacing=(2.0, 2.0, 2.0)))


# the real CLI on the ITK head (one volume, 2 artifacts: 2 domains of its slices) --------------------------
def stream(setting: str = "continual", artifacts=("bias_field", "kspace_spikes")) -> dict:
    source = {"class_path": "sfda.data.ArtifactVolumes",
              "init_args": {"datalist": "demo://skull_stripping/itk.json", "class_names": NAMES,
                            "artifacts": list(artifacts)}}
    return {"class_path": "sfda.data.StreamDataModule",
            "init_args": {"source": source, "setting": setting, "batch_size": 16}}


def run(tmp_path: Path, name: str, method: str, source: Path, data: dict, init: dict | None = None,
        *args: str) -> dict:
    config = recipe(tmp_path / f"{name}.yaml", {"class_path": f"sfda.methods.{method}",
                                                "init_args": {"source": str(source), **(init or {})}},
                    data, {"default_root_dir": str(tmp_path / name)})
    code, text = sfda("fit", "--config", str(config), "--report_evidence=false", *args)
    assert code == 0, text[-3000:]
    return json.loads((tmp_path / name / "version_0" / "results.json").read_text()) | {"console": text}


@pytest.mark.slow  # trains the small Colin27 UNet (session fixture)
def test_the_source_row_is_the_source_models_own_dice_on_each_artifact_domain(tmp_path, colin_source):
    results = run(tmp_path, "source", "SourceOnly", colin_source, stream())
    artifact = load_artifact(colin_source)
    network = artifact.build_network().eval()
    volumes = ArtifactVolumes("demo://skull_stripping/itk.json", NAMES, ["bias_field", "kspace_spikes"])
    volumes.use_input(artifact.input)
    for k, name in enumerate(volumes.shifts):  # an independent computation: all slices at once
        domain = volumes.domain(name, 5)
        images, masks = zip(*(domain.item(i, artifact.input) for i in range(len(domain))), strict=True)
        with torch.no_grad():
            predicted = network(torch.stack(images)).argmax(1) == 1
        truth = torch.stack(masks) == 1
        dice = 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
        assert results[f"online/{k:02d}_{name}-5/dice"] == pytest.approx(float(dice), abs=1e-6)
        assert results[f"online/{k:02d}_{name}-5/samples"] == len(domain)
    assert results["online/dice"] == pytest.approx(
        (results["online/00_bias_field-5/dice"] + results["online/01_kspace_spikes-5/dice"]) / 2)
    assert "online 2/2 kspace_spikes-5: dice" in results["console"]
    page = build_report([tmp_path / "source" / "version_0"], tmp_path / "report.html").read_text()
    assert "online dice" in page and "online error" not in page and "kspace_spikes-5" in page


@pytest.mark.slow
@pytest.mark.parametrize("method,init", [
    ("TestTimeNorm", {}), ("Tent", {}),
    ("CoTTA", {"scales": [1.0, 1.5]}),  # two of the release's seven scales: a quick run
])
def test_bn_tent_and_cotta_adapt_online_on_the_medical_stream(method, init, tmp_path, colin_source):
    results = run(tmp_path, method.lower(), method, colin_source, stream("reset_each_shift"), init)
    source = run(tmp_path, "source", "SourceOnly", colin_source, stream("reset_each_shift"))
    for key in ("online/00_bias_field-5/dice", "online/01_kspace_spikes-5/dice"):
        assert 0 < results[key] <= 1 and math.isfinite(results[key])
    # each method's predictions differ from the source model's (batch statistics at least)
    assert results["online/dice"] != source["online/dice"]


@pytest.mark.ddp
@pytest.mark.parametrize("method,tolerance", [
    ("TestTimeNorm", 1e-6),  # nothing learned: the global batch's statistics give the same predictions
    # 64 Adam steps amplify the rounding of synchronised BatchNorm sums taken in another order (measured:
    # 2e-4 apart on a Dice of 0.32); a process-count dependence would move it by far more
    ("Tent", 2e-3),
])
def test_two_processes_score_the_medical_stream_as_one_does(method, tolerance, tmp_path, colin_source):
    """BatchNorm statistics of the global batch and Dice counts summed over processes: the online Dice per
    domain does not depend on the process count (each run a subprocess, as a user starts it)."""
    config = recipe(tmp_path / "stream.yaml", {"class_path": f"sfda.methods.{method}",
                                              "init_args": {"source": str(colin_source)}}, stream())
    scores = []
    for name, extra in (("one", []), ("two", ["--trainer.strategy=ddp", "--trainer.devices=2"])):
        run_sfda("fit", "--config", str(config), f"--trainer.default_root_dir={tmp_path / name}",
                 "--trainer.accelerator=cpu", *extra)
        scores.append(results_of(tmp_path / name))
    for key in ("online/00_bias_field-5/dice", "online/01_kspace_spikes-5/dice"):
        assert scores[1][key] == pytest.approx(scores[0][key], abs=tolerance), key
