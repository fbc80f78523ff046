"""The bad-input catalogue: what a new user gets wrong, across fit, test, predict, artifacts, image
folders, datalists, class splits and labels files. Every case asserts the exit status (or the error),
that the message names the file or field and the expected value, and that nothing the user had
(artifacts, checkpoints, labels files, results) changed. All cases run in-process on tiny real files.
And a source training stopped and resumed writes the artifact an uninterrupted one writes."""

from __future__ import annotations

import pytest
import torch
from kits.bad_input import (
    assert_refused,
    folder_data,
    recipe,
    sfda,
)
from kits.stops import results, source_recipe, stop_and_resume

from sfda.models import load_artifact


def test_source_training_without_an_input_spec_is_refused_naming_the_field(workspace):
    model = {"class_path": "sfda.methods.SourceTraining", "init_args": {"bottleneck_dim": 16}}
    path = str(recipe(workspace / "no_input.yaml", model, folder_data(workspace / "target", role="source")))
    assert_refused(["fit", "--config", path], workspace,
                   "data.input: source training needs the input spec (size, channels, mean, std)")


@pytest.mark.slow  # a CLI subprocess run
def test_source_artifact_is_complete_and_loads_weights_only(mnist_source):
    artifact = load_artifact(mnist_source)
    assert artifact.class_names == [str(d) for d in range(10)] and artifact.input.size == 28
    payload = torch.load(mnist_source, weights_only=True)
    assert payload["format"] == "sfda-source/1"
    features, logits = artifact.build()(torch.zeros(2, 1, 28, 28))
    assert features.shape == (2, 256) and logits.shape == (2, 10)


@pytest.mark.slow  # three small in-process fits
def test_a_resumed_source_training_writes_the_artifact_of_an_uninterrupted_one(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    code, text = sfda("fit", "--config", source_recipe(whole, epochs=4))
    assert code == 0, text[-3000:]
    stop_and_resume(source_recipe(parts, epochs=4), epoch=2)
    kept = results(whole)["source_val/best_acc"]
    assert results(parts, 1)["source_val/best_acc"] == kept
    expected, written = (load_artifact(root / "source.pt").state_dict for root in (whole, parts))
    assert expected.keys() == written.keys()
    assert all(torch.equal(expected[k], written[k]) for k in expected)
