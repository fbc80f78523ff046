"""Bad-input catalogue, round 3: messages a user can act on (a checkpoint of another network, an
accelerator the machine lacks, ``${VAR}`` in a recipe, a ``--ckpt_path`` that is a folder or a dangling
link, a ``--config`` that is not a recipe) and recipes that include recipes. Every case asserts the exit
status, that the message names the file or field and the expected value, and that no file of the user's
changed. All run in-process on tiny real files."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch
from kits.bad_input import (
    ARCHITECTURE,
    DIGIT_SPEC,
    SHOT,
    SOURCE_INPUT,
    assert_refused,
    digit_images,
    folder_data,
    recipe,
    sfda,
    shot_recipe,
)
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator, XLAAccelerator

from sfda.data.transforms import InputSpec
from sfda.models import SourceClassifier, artifact_from_module
from sfda.run.checks import identity_differences

CLASSES = [str(i) for i in range(10)]


LAST = "runs/shot/version_0/checkpoints/last.ckpt"


def artifact_with(path: Path, **changes) -> Path:
    """A LeNet source artifact like ``source_artifact``'s with some architecture arguments changed."""
    kwargs = {"backbone": "lenet", "num_classes": 10, "in_channels": 1, "input_size": 28,
              "bottleneck_dim": 16, **changes}
    network = SourceClassifier(**kwargs)
    artifact_from_module(network, CLASSES[: kwargs["num_classes"]], DIGIT_SPEC,
                         {"target": ARCHITECTURE, "kwargs": kwargs}).save(path)
    return path


# --- 6a. a checkpoint of the same method made for another network names the recipe field ----
def test_a_checkpoint_of_another_source_network_names_the_field_in_test_predict_and_resume(adapted):
    artifact_with(adapted / "wide.pt", bottleneck_dim=32)
    wide = shot_recipe(adapted, source="wide.pt", name="wide.yaml")
    for subcommand in ("test", "predict", "fit"):
        text = assert_refused([subcommand, "--config", wide, "--ckpt_path", LAST], adapted,
                              "was made for another network",
                              "model.init_args.source kwargs.bottleneck_dim: 16 in the checkpoint, 32 in the "
                              "recipe's source", LAST)
        assert "wide.pt" in text and "Missing key" not in text


def test_a_source_artifact_replaced_in_place_is_named_from_what_the_checkpoint_recorded(adapted):
    artifact_with(adapted / "source.pt", bottleneck_dim=8)
    text = assert_refused(["test", "--config", shot_recipe(adapted), "--ckpt_path", LAST], adapted,
                          "kwargs.bottleneck_dim: 16 in the checkpoint, 8 in the recipe's source")
    assert "model.init_args.beta" not in text  # only fields that differ are named


def test_a_source_training_checkpoint_of_another_bottleneck_names_the_recipe_field(workspace):
    model = {"class_path": "sfda.methods.SourceTraining", "init_args": {"bottleneck_dim": 16}}
    data = folder_data(workspace / "target", role="source", input=SOURCE_INPUT)
    path = recipe(workspace / "source_train.yaml", model, data)
    code, text = sfda("fit", "--config", str(path))
    assert code == 0, text[-2000:]
    model["init_args"]["bottleneck_dim"] = 24
    recipe(workspace / "wider.yaml", model, data)
    checkpoint = "runs/source_train/version_0/checkpoints/last.ckpt"
    assert_refused(["test", "--config", "wider.yaml", "--ckpt_path", checkpoint], workspace,
                   "model.init_args.bottleneck_dim: 16 in the checkpoint, 24 in the recipe", checkpoint)


def test_a_checkpoint_that_records_nothing_names_the_first_keys_and_says_another_network(adapted):
    checkpoint = torch.load(adapted / LAST, weights_only=True)
    checkpoint.pop("hyper_parameters")
    checkpoint["sfda"].pop("network")
    torch.save(checkpoint, adapted / "bare.ckpt")
    artifact_with(adapted / "wide.pt", bottleneck_dim=32)
    text = assert_refused(["test", "--config", shot_recipe(adapted, source="wide.pt"), "--ckpt_path",
                           "bare.ckpt"], adapted, "bare.ckpt does not fit this recipe",
                          "network.network.bottleneck.0.weight: (16, 800) in the checkpoint, (32, 800) "
                          "for this recipe", "the same network")
    assert re.search(r"; and \d+ more\)", text)


def test_a_checkpoint_of_another_backbone_or_class_count_names_the_artifact_field(adapted):
    artifact_with(adapted / "mlp.pt", backbone="mlp")
    assert_refused(["predict", "--config", shot_recipe(adapted, source="mlp.pt"), "--ckpt_path", LAST],
                   adapted, "kwargs.backbone: 'lenet' in the checkpoint, 'mlp' in the recipe's source "
                   f"{adapted / 'mlp.pt'}")
    digit_images(adapted / "five", CLASSES[:5])
    artifact_with(adapted / "five.pt", num_classes=5)
    model = {"class_path": SHOT, "init_args": {"source": str(adapted / "five.pt")}}
    five = recipe(adapted / "five.yaml", model, folder_data(adapted / "five"))
    assert_refused(["test", "--config", str(five), "--ckpt_path", LAST], adapted,
                   "model.init_args.source classes: 10 in the checkpoint, 5 in the recipe's source",
                   "kwargs.num_classes: 10 in the checkpoint, 5")


def test_a_checkpoint_older_than_the_network_record_names_the_source_that_differs(adapted):
    checkpoint = torch.load(adapted / LAST, weights_only=True)
    checkpoint["sfda"].pop("network")
    torch.save(checkpoint, adapted / "old.ckpt")
    artifact_with(adapted / "wide.pt", bottleneck_dim=32)
    assert_refused(["test", "--config", shot_recipe(adapted, source="wide.pt"), "--ckpt_path", "old.ckpt"],
                   adapted, f"model.init_args.source: '{adapted / 'source.pt'}' in the checkpoint, "
                   f"'{adapted / 'wide.pt'}' in the recipe")


def test_a_checkpoint_with_other_layer_names_names_the_missing_and_unknown_keys(adapted):
    checkpoint = torch.load(adapted / LAST, weights_only=True)
    checkpoint.pop("hyper_parameters")
    checkpoint["sfda"].pop("network")
    state = checkpoint["state_dict"]
    checkpoint["state_dict"] = {k.replace(".backbone.", ".trunk."): v for k, v in state.items()}
    torch.save(checkpoint, adapted / "renamed.ckpt")
    for subcommand in ("test", "fit"):
        text = assert_refused([subcommand, "--config", shot_recipe(adapted), "--ckpt_path", "renamed.ckpt"],
                              adapted, "renamed.ckpt does not fit this recipe",
                              "network.network.backbone.0.weight: missing from the checkpoint",
                              "expected a checkpoint of the same network")
        assert "Missing key(s)" not in text and "Unexpected key(s)" not in text


# --- 6b. an accelerator or devices the machine does not have: the field, what was found, the fix ----
@pytest.fixture()
def no_gpu(monkeypatch):
    """A machine without CUDA, MPS or TPU (whatever the test machine has)."""
    for accelerator in (CUDAAccelerator, MPSAccelerator, XLAAccelerator):
        monkeypatch.setattr(accelerator, "is_available", staticmethod(lambda: False))
    monkeypatch.setattr(CUDAAccelerator, "auto_device_count", staticmethod(lambda: 0))


@pytest.mark.parametrize("accelerator, needs", [("gpu", "a CUDA or Apple MPS GPU"), ("cuda", "a CUDA GPU"),
                                                ("mps", "an Apple MPS GPU"), ("tpu", "a TPU and torch_xla"),
                                                ("GPU", "a CUDA or Apple MPS GPU")])
def test_an_accelerator_the_machine_lacks_names_the_field_and_the_fix(workspace, no_gpu, accelerator, needs):
    text = assert_refused(["fit", "--config", shot_recipe(workspace), f"--trainer.accelerator={accelerator}"],
                          workspace, f"trainer.accelerator: '{accelerator}' needs {needs}",
                          "0 CUDA devices", "--trainer.accelerator=cpu, or auto")
    assert "Traceback" not in text and len(text.strip().splitlines()) <= 3


def test_an_unknown_accelerator_name_lists_the_accepted_ones(workspace):
    assert_refused(["test", "--config", shot_recipe(workspace), "--trainer.accelerator=gpus"], workspace,
                   "trainer.accelerator: 'gpus' is not an accelerator", "cpu, gpu, cuda, mps, tpu, auto")


@pytest.mark.parametrize("devices, needle", [("2", "asks for 2 GPUs but this machine has 1"),
                                             ("[0,3]", "asks for GPU ids [0, 3] but this machine has 1"),
                                             ("1,2", "asks for GPU ids [1, 2] but this machine has 1")])
def test_more_gpus_than_the_machine_has_are_refused_by_field(workspace, monkeypatch, devices, needle):
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: True))
    monkeypatch.setattr(CUDAAccelerator, "auto_device_count", staticmethod(lambda: 1))
    assert_refused(["fit", "--config", shot_recipe(workspace), "--trainer.accelerator=gpu",
                    f"--trainer.devices={devices}"], workspace, "trainer.devices: ", needle,
                   "expected at most 1, or -1")


def test_gpu_ids_on_the_cpu_are_refused_by_field(workspace, no_gpu):
    assert_refused(["fit", "--config", shot_recipe(workspace), "--trainer.devices=[0,1]"], workspace,
                   "trainer.devices: [0, 1] names GPU ids, but the run is on the CPU",
                   "expected a process count (e.g. 2) or auto")


# --- 6c. a --ckpt_path that is a folder or a dangling link says what the path is ----
@pytest.mark.parametrize("folder, suggestion", [
    ("runs/shot/version_0", "e.g. runs/shot/version_0/checkpoints/last.ckpt"),
    ("runs/shot/version_0/checkpoints", "such as runs/shot/version_0/checkpoints/last.ckpt, "
                                        "runs/shot/version_0/checkpoints/epoch=0-step=5.ckpt"),
    ("runs", "such as runs/shot/version_0/checkpoints/last.ckpt"),
    ("target", "(target holds no .ckpt file)"),
])
def test_a_ckpt_path_that_is_a_folder_suggests_the_checkpoints_inside(adapted, folder, suggestion):
    for subcommand in ("test", "fit"):
        assert_refused([subcommand, "--config", shot_recipe(adapted), "--ckpt_path", folder], adapted,
                       f"--ckpt_path: {folder} is a folder; expected a .ckpt file", suggestion)


def test_a_dangling_last_ckpt_link_names_its_missing_target(adapted):
    checkpoints = adapted / "runs/shot/version_0/checkpoints"
    target = checkpoints / (adapted / LAST).readlink()
    kept = target.rename(adapted / "kept.ckpt")  # the epoch file the link points at is gone
    for ckpt_path in (LAST, "last"):
        assert_refused(["test", "--config", shot_recipe(adapted), "--ckpt_path", ckpt_path], adapted,
                       f"{LAST} is a link to runs/shot/version_0/checkpoints/{target.name}, which does not "
                       "exist", "expected a link to a .ckpt file",
                       "(runs/shot/version_0/checkpoints holds no .ckpt file)")
    assert kept.is_file() and (adapted / LAST).is_symlink()


def test_ckpt_path_last_never_falls_back_to_an_older_run_past_a_dangling_link(adapted):
    code, text = sfda("fit", "--config", shot_recipe(adapted))
    assert code == 0, text[-2000:]
    newest = adapted / "runs/shot/version_1/checkpoints/last.ckpt"
    (newest.parent / newest.readlink()).unlink()
    assert_refused(["fit", "--config", shot_recipe(adapted), "--ckpt_path", "last"], adapted,
                   "--ckpt_path last: runs/shot/version_1/checkpoints/last.ckpt is a link to")


def test_a_source_artifact_given_as_ckpt_path_says_where_it_belongs(workspace):
    assert_refused(["test", "--config", shot_recipe(workspace), "--ckpt_path", "source.pt"], workspace,
                   "source.pt is a source artifact, not a run's checkpoint", "model.init_args.source")


def test_a_bigger_target_set_with_another_learning_rate_is_not_blamed_on_the_network(adapted):
    digit_images(adapted / "target", ["0"], per_class=8)  # 4 more images than when it was adapted
    text = assert_refused(["fit", "--config", shot_recipe(adapted), "--ckpt_path", LAST,
                           "--trainer.max_epochs=2", "--model.init_args.beta=0.2"], adapted,
                          "does not fit this recipe",
                          "pseudo_labels: (40,) in the checkpoint, (44,) for this recipe", "target set")
    assert "another network" not in text and "beta" not in text


# --- hunt 12: a strategy whose package is not installed names the package and the fix ----
STRATEGY_NEEDS = [("deepspeed", "deepspeed"), ("deepspeed_stage_3_offload", "deepspeed"),
                  ("xla", "torch_xla")]


@pytest.mark.parametrize("strategy, package", STRATEGY_NEEDS)
def test_a_strategy_whose_package_is_missing_names_the_package_and_the_fix(workspace, no_gpu, strategy,
                                                                            package):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    needle = f"sfda: error: trainer.strategy: '{strategy}' needs the {package} package, which is not"
    text = assert_refused(["fit", "--config", shot_recipe(workspace), f"--trainer.strategy={strategy}"],
                          workspace, needle, "install it (pip install")
    assert "Traceback" not in text and "MisconfigurationException" not in text


# --- hunt 7: a checkpoint of another source model with the same tensor shapes is refused by what differs ----
def lenet_artifact(path: Path, names: list[str], spec: InputSpec = DIGIT_SPEC) -> Path:
    """An untrained LeNet source artifact of the digit shapes, with ``names`` and ``spec``."""
    kwargs = {"backbone": "lenet", "num_classes": len(names), "in_channels": 1, "input_size": 28,
              "bottleneck_dim": 16}
    artifact_from_module(SourceClassifier(**kwargs), names, spec,
                         {"target": ARCHITECTURE, "kwargs": kwargs}).save(path)
    return path


def test_a_checkpoint_of_a_source_with_other_class_names_is_refused_naming_both_lists(adapted):
    lenet_artifact(adapted / "reversed.pt", CLASSES[::-1])
    other = shot_recipe(adapted, source="reversed.pt", name="reversed.yaml")
    for subcommand in ("validate", "test", "predict", "fit"):
        text = assert_refused([subcommand, "--config", other, "--ckpt_path", LAST], adapted,
                              f"--ckpt_path: {LAST} was made from another source model than the recipe's "
                              f"model.init_args.source {adapted / 'reversed.pt'}",
                              f"class names {CLASSES!r} in the checkpoint, {CLASSES[::-1]!r} in the recipe's "
                              "source")
        assert "Traceback" not in text


def test_a_checkpoint_of_a_source_with_another_input_spec_is_refused_naming_both(adapted):
    lenet_artifact(adapted / "shifted.pt", CLASSES, InputSpec(size=28, channels=1, mean=(0.3,), std=(0.5,)))
    assert_refused(["test", "--config", shot_recipe(adapted, source="shifted.pt", name="shifted.yaml"),
                    "--ckpt_path", LAST], adapted, "input spec {'size': 28, 'channels': 1, 'mean': [0.5], "
                   "'std': [0.5]} in the checkpoint, {'size': 28, 'channels': 1, 'mean': [0.3]")


def test_the_same_source_is_accepted_and_a_long_class_list_is_shortened():
    assert identity_differences({"class_names": ["a", "b"]}, {"class_names": ["a", "b"]}) == []
    assert identity_differences({}, {"class_names": ["a"]}) == []  # a checkpoint older than the record
    names = [f"c{i}" for i in range(100)]
    (line,) = identity_differences({"class_names": names}, {"class_names": names[::-1]})
    assert f"{names[:10]!r}[:10] of 100 in the checkpoint, {names[::-1][:10]!r}[:10] of 100" in line
