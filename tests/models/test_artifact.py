"""The bad-input catalogue: what a new user gets wrong, across fit, test, predict, artifacts, image
folders, datalists, class splits and labels files. Every case asserts the exit status (or the error),
that the message names the file or field and the expected value, and that nothing the user had
(artifacts, checkpoints, labels files, results) changed. All cases run in-process on tiny real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from kits.bad_input import (
    ARCHITECTURE,
    assert_refused,
    recipe,
    shot_recipe,
)
from PIL import Image

from sfda.models import ArtifactError, load_artifact


def crafted_artifact(root, target: str, kwargs: dict | None = None):
    """source.pt with its architecture replaced by ``target`` (what a hostile party could hand over)."""
    payload = torch.load(root / "source.pt", weights_only=True)
    payload["architecture"] = {"target": target, "kwargs": kwargs or {}}
    torch.save(payload, root / "crafted.pt")
    return root / "crafted.pt"


# --- 1. a source artifact is data: it never chooses code to run ----
def test_artifact_naming_os_system_is_refused_and_runs_nothing(workspace):
    marker = workspace / "pwned"
    crafted_artifact(workspace, "os:system", {"command": f"touch {marker}"})
    assert_refused(
        ["fit", "--config", shot_recipe(workspace, "crafted.pt")],
        workspace,
        "crafted.pt",
        "'os:system'",
        "sfda does not build",
    )
    assert not marker.exists()


def test_artifact_naming_a_model_file_is_refused_before_the_file_is_imported(workspace):
    marker = workspace / "imported"
    (workspace / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Net:\n    pass\n")
    crafted_artifact(workspace, f"{workspace}/evil.py:Net")
    assert_refused(
        ["fit", "--config", shot_recipe(workspace, "crafted.pt")],
        workspace,
        "evil.py:Net",
        "model.init_args.source: {path:",
    )
    assert not marker.exists()


def test_a_text_file_handed_over_as_an_artifact_is_not_read_as_a_recipe(workspace):
    marker = workspace / "pwned"
    (workspace / "source.pt").write_text(
        f"architecture: 'os:system'\nweights: w.pt\nfeature_layer: a\nhead_layer: b\n"
        f"class_names: [a]\ninput: {{size: 8}}\nkwargs: {{command: touch {marker}}}\n"
    )
    assert_refused(
        ["fit", "--config", shot_recipe(workspace)], workspace, "source.pt", "not a readable source artifact"
    )
    assert not marker.exists()


def test_trusted_architecture_must_be_the_one_the_artifact_names(workspace):
    crafted_artifact(workspace, "my_models.py:Other")
    trusted = {"path": str(workspace / "crafted.pt"), "architecture": "my_models.py:Net"}
    assert_refused(
        ["fit", "--config", shot_recipe(workspace, trusted)],
        workspace,
        "'my_models.py:Other'",
        "model.source.architecture = 'my_models.py:Net'",
        "same class",
    )


def test_an_external_class_the_recipe_trusts_is_found_in_the_working_directory(workspace):
    (workspace / "my_models.py").write_text("from sfda.models.classifier import SourceClassifier as Net\n")
    payload = torch.load(workspace / "source.pt", weights_only=True)
    # a module name, not importable: found as my_models.py in the cwd
    payload["architecture"]["target"] = "my_models:Net"
    torch.save(payload, workspace / "external.pt")
    artifact = load_artifact(workspace / "external.pt", trusted_architecture="my_models:Net")
    assert artifact.build().head.out_features == 10


def test_a_missing_model_file_says_where_it_looked(workspace):
    crafted_artifact(workspace, "nowhere.py:Net")
    trusted = {"path": str(workspace / "crafted.pt"), "architecture": "nowhere.py:Net"}
    assert_refused(
        ["fit", "--config", shot_recipe(workspace, trusted)],
        workspace,
        "model file 'nowhere.py' not found; looked in",
        str(workspace / "nowhere.py"),
    )


@pytest.mark.parametrize(
    "damage, needle",
    [
        ("missing", "model.source: "),
        ("text", "not a readable source artifact"),
        ("plain_state_dict", "not an sfda source artifact"),
        ("no_class_names", "field 'class_names' must be a list"),
        ("nan_weights", "non-finite weights"),
        ("bad_input_spec", "field 'input' is not a valid input spec"),
    ],
)
def test_broken_artifacts_are_refused_naming_the_file(workspace, damage, needle):
    path = workspace / "broken.pt"
    payload = torch.load(workspace / "source.pt", weights_only=True)
    if damage == "text":
        path.write_text("this is not a model\n")
    elif damage == "plain_state_dict":
        torch.save(payload["state_dict"], path)
    elif damage == "no_class_names":
        torch.save({k: v for k, v in payload.items() if k != "class_names"}, path)
    elif damage == "nan_weights":
        next(v for v in payload["state_dict"].values() if v.is_floating_point()).fill_(float("nan"))
        torch.save(payload, path)
    elif damage == "bad_input_spec":
        torch.save({**payload, "input": {"size": 28, "channels": 5}}, path)
    text = assert_refused(["fit", "--config", shot_recipe(workspace, "broken.pt")], workspace, needle)
    assert "broken.pt" in text


def test_input_channels_that_the_network_cannot_take_are_refused_at_load(workspace):
    torch.save(torch.load(workspace / "source.pt", weights_only=True)["state_dict"], workspace / "weights.pt")
    external = {
        "architecture": ARCHITECTURE,
        "weights": str(workspace / "weights.pt"),
        "feature_layer": "bottleneck",
        "head_layer": "head",
        "class_names": [str(i) for i in range(10)],
        "input": {"size": 28, "channels": 3, "mean": [0.5] * 3, "std": [0.5] * 3},
        "kwargs": {
            "backbone": "lenet",
            "num_classes": 10,
            "in_channels": 1,
            "input_size": 28,
            "bottleneck_dim": 16,
        },
    }
    assert_refused(["fit", "--config", shot_recipe(workspace, external)], workspace, "input.channels = 3")


@pytest.mark.parametrize(
    "damage, needle",
    [
        ("int_names", "field 'class_names' must be distinct strings"),
        ("bad_kwargs", "architecture.kwargs"),
    ],
)
def test_artifact_fields_that_cannot_build_the_model_are_named(workspace, damage, needle):
    payload = torch.load(workspace / "source.pt", weights_only=True)
    if damage == "int_names":
        payload["class_names"] = list(range(10))
    else:
        payload["architecture"]["kwargs"]["dropout"] = 0.5
    torch.save(payload, workspace / "odd.pt")
    assert_refused(["fit", "--config", shot_recipe(workspace, "odd.pt")], workspace, needle, "odd.pt")


# --- detection: boxes, labels, images and artifacts of the wrong task, through the CLI ----
def detection_recipe(root, boxes_csv: Path, source: Path) -> str:
    model = {"class_path": "sfda.methods.LPLD", "init_args": {"source": str(source)}}
    data = {
        "class_path": "sfda.data.DetectionDataModule",
        "init_args": {"train": [str(boxes_csv)], "role": "target", "batch_size": 1, "eval_batch_size": 1},
    }
    return str(recipe(root / "lpld.yaml", model, data))


def test_a_classification_artifact_in_a_detection_recipe_is_refused_by_the_cli(workspace):
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(workspace / "a.png")
    (workspace / "boxes.csv").write_text("image_path,xmin,ymin,xmax,ymax,label\na.png,1,1,9,9,0\n")
    assert_refused(
        ["fit", "--config", detection_recipe(workspace, workspace / "boxes.csv", workspace / "source.pt")],
        workspace,
        "source.pt is a 'classification' artifact; LPLD adapts detection models only",
    )


def test_a_detection_artifact_in_a_classification_recipe_is_refused_by_the_cli(workspace):
    from kits.detection import detection_artifact

    detection_artifact(workspace / "detector.pt")
    assert_refused(
        ["fit", "--config", shot_recipe(workspace, source="detector.pt")],
        workspace,
        "detector.pt is a 'detection' artifact; SHOT adapts classification models only",
        "SHOT adapts classification models only",
    )


def test_missing_and_foreign_artifacts_are_refused(tmp_path):
    with pytest.raises(ArtifactError, match="no such file"):
        load_artifact(tmp_path / "nope.pt")
    torch.save({"weight": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(ArtifactError, match="not an sfda source artifact"):
        load_artifact(tmp_path / "plain.pt")


WEIGHT_NORM_MODEL = '''
import torch
from torch import nn


class Net(nn.Module):
    """A published-style head: torch.nn.utils.weight_norm (a forward hook), as SHOT's feat_classifier."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU())
        self.head = torch.nn.utils.weight_norm(nn.Linear(8, 3), name="weight")

    def forward(self, x):
        return self.head(self.body(x))
'''


def test_a_model_with_the_hook_weight_norm_is_built_copyable_with_the_same_outputs(tmp_path, monkeypatch):
    """Its hook-computed weight is no graph leaf, so the network could not be deep-copied (teachers, folded
    copies): sfda rebuilds it as a parametrization; weights saved with either kind of keys load."""
    import copy
    import sys

    from sfda.data import InputSpec
    from sfda.models import ExternalModel, wrap_external

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "wn_model.py").write_text(WEIGHT_NORM_MODEL)
    import wn_model

    torch.manual_seed(0)
    legacy = wn_model.Net().eval()
    x = torch.randn(4, 1, 4, 4)
    expected = legacy(x)
    torch.save(legacy.state_dict(), tmp_path / "legacy.pt")
    assert "head.weight_g" in legacy.state_dict()
    for weights in ("legacy.pt", "modern.pt"):
        model = ExternalModel(architecture="wn_model.py:Net", weights=str(tmp_path / weights),
                              class_names=["a", "b", "c"], input=InputSpec(4, 1, (0.5,), (0.5,)),
                              feature_layer="body", head_layer="head")
        network = wrap_external(model).build().eval()
        assert torch.allclose(network(x)[1], expected, atol=1e-6)
        assert torch.allclose(copy.deepcopy(network)(x)[1], expected, atol=1e-6)
        torch.save(network.network.state_dict(), tmp_path / "modern.pt")  # the parametrization's keys
    assert "head.parametrizations.weight.original0" in torch.load(tmp_path / "modern.pt", weights_only=True)
    sys.modules.pop("wn_model", None)
    with pytest.raises(RuntimeError, match="deepcopy"):  # what the hook form does after a forward
        copy.deepcopy(legacy)
