"""Bad-input catalogue, round 3: messages a user can act on (a checkpoint of another network, an
accelerator the machine lacks, ``${VAR}`` in a recipe, a ``--ckpt_path`` that is a folder or a dangling
link, a ``--config`` that is not a recipe) and recipes that include recipes. Every case asserts the exit
status, that the message names the file or field and the expected value, and that no file of the user's
changed. All run in-process on tiny real files."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
from pathlib import Path

import pytest
import torch
import yaml
from bad_input_kit import (
    ARCHITECTURE,
    DIGIT_SPEC,
    assert_refused,
    digit_images,
    digit_workspace,
    folder_data,
    recipe,
    sfda,
)
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator, XLAAccelerator

from sfda.cli import main
from sfda.data.transforms import InputSpec
from sfda.models import SourceClassifier, artifact_from_module
from sfda.recipe_files import same_class
from sfda.run.checks import identity_differences

SHOT = "sfda.methods.SHOT"
CLASSES = [str(i) for i in range(10)]
SOURCE_INPUT = {"size": 28, "channels": 1, "mean": [0.5], "std": [0.5]}
LAST = "runs/shot/version_0/checkpoints/last.ckpt"


@pytest.fixture()
def workspace(tmp_path, monkeypatch) -> Path:
    """A user's folder (also the cwd) with a 10-class target image folder and a source artifact."""
    return digit_workspace(tmp_path, monkeypatch)


def shot_recipe(root: Path, source: str = "source.pt", name: str = "shot.yaml", **trainer) -> str:
    model = {"class_path": SHOT, "init_args": {"source": str(root / source), "beta": 0.1}}
    return str(recipe(root / name, model, folder_data(root / "target"), trainer))


def artifact_with(path: Path, **changes) -> Path:
    """A LeNet source artifact like ``source_artifact``'s with some architecture arguments changed."""
    kwargs = {"backbone": "lenet", "num_classes": 10, "in_channels": 1, "input_size": 28,
              "bottleneck_dim": 16, **changes}
    network = SourceClassifier(**kwargs)
    artifact_from_module(network, CLASSES[: kwargs["num_classes"]], DIGIT_SPEC,
                         {"target": ARCHITECTURE, "kwargs": kwargs}).save(path)
    return path


@pytest.fixture()
def adapted(workspace):
    """The workspace after one real SHOT epoch: runs/shot/version_0/checkpoints/last.ckpt."""
    code, text = sfda("fit", "--config", shot_recipe(workspace))
    assert code == 0, text[-2000:]
    return workspace


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


# --- 6d. ${VAR} and other interpolation errors name the recipe, the key and ${oc.env:VAR} ----
def recipe_with(root: Path, name: str, trainer_line: str) -> str:
    """shot.yaml's text with ``max_epochs: 1`` replaced by ``trainer_line``, saved as ``name``."""
    text = Path(shot_recipe(root)).read_text().replace("max_epochs: 1", trainer_line)
    (root / name).write_text(text)
    return name


@pytest.mark.parametrize("line, needles", [
    ("max_epochs: ${EPOCHS}", ["trainer.max_epochs: Interpolation key 'EPOCHS' not found",
                               "${oc.env:VAR} (or ${oc.env:VAR,default})"]),
    ("max_epochs: ${trainer.epochs}", ["trainer.max_epochs: Interpolation key 'trainer.epochs' not found",
                                       "expected a key of the recipe"]),
    ("max_epochs: ${oc.env:SFDA_TEST_UNSET_EPOCHS}",
     ["trainer.max_epochs:", "SFDA_TEST_UNSET_EPOCHS", "a default: ${oc.env:VAR,default}"]),
    ("max_epochs: ${env:EPOCHS}", ["trainer.max_epochs: Unsupported interpolation type env",
                                   "${oc.env:VAR}"]),
    ("max_epochs: ${EPOCHS", ["trainer.max_epochs:", "with its braces closed"]),
])
def test_an_interpolation_that_fails_names_the_recipe_the_key_and_oc_env(workspace, monkeypatch, line,
                                                                         needles):
    monkeypatch.delenv("SFDA_TEST_UNSET_EPOCHS", raising=False)
    name = recipe_with(workspace, "env.yaml", line)
    text = assert_refused(["fit", "--config", name], workspace, f"recipe {name}: ", *needles)
    assert "Traceback" not in text and "full_key" not in text


def test_oc_env_with_a_default_and_a_set_variable_work(workspace, monkeypatch):
    monkeypatch.setenv("SFDA_TEST_EPOCHS", "1")
    for line in ("max_epochs: ${oc.env:SFDA_TEST_EPOCHS}", "max_epochs: ${oc.env:SFDA_TEST_UNSET,1}"):
        code, text = sfda("fit", "--config", recipe_with(workspace, "env.yaml", line), "--print_config")
        assert code == 0, text[-2000:]
        assert "max_epochs: 1\n" in text


# --- 6e. a --config that is not a recipe: a folder, nothing, an empty file, not a mapping, not UTF-8 ----
def test_a_config_that_is_a_folder_lists_the_recipes_inside(workspace):
    (workspace / "recipes").mkdir()
    shot_recipe(workspace, name="recipes/shot.yaml")
    assert_refused(["fit", "--config", "recipes"], workspace, "--config: ", "recipes is a folder; expected a "
                   "recipe .yaml file, such as", "recipes/shot.yaml", status=2)
    assert_refused(["fit", "--config", "target"], workspace, "target is a folder", "holds none", status=2)


def test_a_config_that_does_not_exist_says_so(workspace):
    assert_refused(["fit", "--config", "shot.yml"], workspace,
                   "shot.yml does not exist; expected the path of a recipe .yaml file", status=2)


@pytest.mark.parametrize("content, needle", [
    (b"", "recipe bad.yaml is empty; expected a mapping with trainer, model and data"),
    (b"# only a comment\n", "recipe bad.yaml is empty"),
    (b"- trainer\n- model\n", "recipe bad.yaml holds a list at the top; expected a mapping"),
    (b"fit the model\n", "recipe bad.yaml holds a str at the top; expected a mapping"),
    ("trainer:\n  max_epochs: 1\n".encode("utf-16"), "recipe bad.yaml: saved as UTF-16; expected UTF-8"),
    ("trainer:\n  max_epochs: 1 # caf\xe9\n".encode("latin-1"),
     "recipe bad.yaml: byte 0xe9 on line 2 is not UTF-8; expected UTF-8 text"),
    (b"trainer: [1\n", "recipe bad.yaml: not valid YAML at line 2, column 1"),
    (b"trainer:\n\tmax_epochs: 1\n", "recipe bad.yaml: not valid YAML at line 2, column 1"),
    (b"trainer:\n  max_epochs: 1\nmodel: {}\ntrainer:\n  limit_train_batches: 2\n",
     "recipe bad.yaml: not valid YAML at line 4, column 1 (key 'trainer' is given twice (lines 1 and 4); "
     "expected it once)"),
    (b"model:\n  init_args:\n    beta: 0.1\n    rounds: 2\n    beta: 0.3\n",
     "key 'beta' is given twice (lines 3 and 5)"),
])
def test_a_config_that_is_not_a_recipe_is_named_with_what_was_expected(workspace, content, needle):
    (workspace / "bad.yaml").write_bytes(content)
    text = assert_refused(["fit", "--config", "bad.yaml"], workspace, needle)
    assert "Traceback" not in text


def test_a_checkpoint_or_artifact_given_as_config_says_where_it_belongs(adapted):
    for given in (LAST, "source.pt"):
        assert_refused(["test", "--config", given], adapted, f"recipe {given} is a binary file",
                       "expected a YAML recipe", "--ckpt_path", "model.init_args.source")


@pytest.mark.parametrize("included", [False, True])
def test_a_recipe_with_a_python_tag_is_refused_and_runs_nothing(workspace, included):
    marker = workspace / "ran"
    (workspace / "evil.yaml").write_text(f"trainer: !!python/object/apply:os.system ['touch {marker}']\n")
    (workspace / "mine.yaml").write_text("config: evil.yaml\n")
    text = assert_refused(["fit", "--config", "mine.yaml" if included else "evil.yaml"], workspace,
                          "evil.yaml: not valid YAML at line 1", "python/object/apply:os.system")
    assert not marker.exists() and "Traceback" not in text


def test_a_recipe_with_a_byte_order_mark_is_read(workspace):
    path = Path(shot_recipe(workspace))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    code, text = sfda("fit", "--config", str(path), "--print_config")
    assert code == 0, text[-2000:]


# --- 7. a recipe that includes another (config: base.yaml) merges nested keys both ways ----
def printed_config(*args: str) -> dict:
    """The resolved config ``sfda fit <args> --print_config`` prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        main(["fit", *args, "--print_config"])
    assert done.value.code in (0, None), out.getvalue()[-2000:]
    return yaml.safe_load(out.getvalue())


@pytest.fixture()
def base(workspace) -> Path:
    """base.yaml: a SHOT recipe with several trainer, model and data keys set."""
    model = {"class_path": SHOT, "init_args": {"source": str(workspace / "source.pt"), "beta": 0.3,
                                               "rounds": 4}}
    trainer = {"max_epochs": 3, "limit_train_batches": 2, "log_every_n_steps": 7}
    return recipe(workspace / "base.yaml", model, folder_data(workspace / "target", num_workers=0), trainer)


OVERRIDES = {"trainer": {"max_epochs": 1}, "model": {"init_args": {"beta": 0.5}},
             "data": {"init_args": {"batch_size": 4}}}


@pytest.mark.parametrize("include_first", [True, False])
def test_an_including_recipe_overrides_its_keys_and_keeps_the_included_ones(workspace, base, include_first):
    parts = [{"config": "base.yaml"}, OVERRIDES]
    text = "".join(yaml.safe_dump(p, sort_keys=False) for p in (parts if include_first else parts[::-1]))
    (workspace / "mine.yaml").write_text(text)
    before = base.read_text()
    config = printed_config("--config", "mine.yaml")
    assert config["trainer"]["max_epochs"] == 1  # the including recipe's key wins
    assert config["trainer"]["limit_train_batches"] == 2 and config["trainer"]["log_every_n_steps"] == 7
    assert config["model"]["class_path"] == SHOT
    assert config["model"]["init_args"]["beta"] == 0.5 and config["model"]["init_args"]["rounds"] == 4
    assert config["data"]["init_args"]["batch_size"] == 4
    assert config["data"]["init_args"]["train"] == str(workspace / "target")
    assert config["data"]["init_args"]["eval_batch_size"] == 16
    assert base.read_text() == before


def test_an_including_recipe_adds_keys_and_the_command_line_still_overrides_both(workspace, base):
    (workspace / "mine.yaml").write_text("config: base.yaml\ntrainer:\n  limit_val_batches: 3\n")
    config = printed_config("--config", "mine.yaml", "--trainer.log_every_n_steps=5")
    assert config["trainer"]["limit_val_batches"] == 3 and config["trainer"]["max_epochs"] == 3
    assert config["trainer"]["log_every_n_steps"] == 5


def test_includes_nest_resolve_from_the_including_folder_and_interpolate_across_files(workspace, base,
                                                                                       monkeypatch):
    (workspace / "team").mkdir()
    (workspace / "team/middle.yaml").write_text("config: ../base.yaml\ntrainer:\n  max_epochs: 2\n")
    (workspace / "team/mine.yaml").write_text("config: [middle.yaml]\ntrainer:\n"
                                              "  limit_val_batches: ${trainer.limit_train_batches}\n")
    monkeypatch.chdir(workspace / "target")
    config = printed_config("--config", "../team/mine.yaml")
    assert config["trainer"]["max_epochs"] == 2 and config["trainer"]["limit_val_batches"] == 2
    assert config["model"]["init_args"]["rounds"] == 4


def test_an_included_recipe_of_another_model_class_is_replaced_not_mixed(workspace, base):
    (workspace / "tent.yaml").write_text(yaml.safe_dump({"config": "base.yaml", "model": {
        "class_path": "sfda.methods.Tent", "init_args": {"source": str(workspace / "source.pt")}}}))
    config = printed_config("--config", "tent.yaml")
    assert config["model"]["class_path"] == "sfda.methods.Tent"
    assert "beta" not in config["model"]["init_args"] and "rounds" not in config["model"]["init_args"]
    assert config["trainer"]["limit_train_batches"] == 2


def test_a_run_of_an_including_recipe_records_and_uses_the_merged_config(workspace, base):
    (workspace / "mine.yaml").write_text("config: base.yaml\ntrainer:\n  max_epochs: 1\n")
    code, text = sfda("fit", "--config", "mine.yaml")
    assert code == 0, text[-2000:]
    saved = yaml.safe_load((workspace / "runs/mine/version_0/config.yaml").read_text())
    assert saved["trainer"]["max_epochs"] == 1 and saved["trainer"]["limit_train_batches"] == 2
    checkpoint = torch.load(next((workspace / "runs/mine/version_0/checkpoints").glob("epoch=*.ckpt")),
                            weights_only=True)
    assert checkpoint["global_step"] == 2  # limit_train_batches of the included recipe was applied


@pytest.mark.parametrize("mine, needles", [
    ("config: nothere.yaml\n", ["recipe ", "mine.yaml: config: nothere.yaml: ", "is not a file; expected a "
                                "recipe to include (a path relative to this recipe's folder)"]),
    ("config: 3\n", ["mine.yaml: config: 3; expected the path of a recipe to include"]),
    ("config: mine.yaml\n", ["mine.yaml: includes itself (mine.yaml -> mine.yaml)"]),
    ("config: base.yaml\ntrainer: [1\n", ["mine.yaml: not valid YAML"]),
])
def test_an_include_that_cannot_work_names_the_recipe_and_key(workspace, base, mine, needles):
    (workspace / "mine.yaml").write_text(mine)
    assert_refused(["fit", "--config", "mine.yaml"], workspace, *needles)


def test_an_included_recipe_that_is_not_a_recipe_is_named(workspace):
    (workspace / "base.yaml").write_bytes("trainer: caf\xe9\n".encode("latin-1"))
    (workspace / "mine.yaml").write_text("config: base.yaml\n")
    assert_refused(["fit", "--config", "mine.yaml"], workspace, "base.yaml: byte 0xe9 on line 1 is not UTF-8")


# --- 6f. more trainer fields the machine or sfda cannot do, named with the expected value ----
@pytest.mark.parametrize("override, needle", [
    ("--trainer.devices=0", "trainer.devices: 0; expected a count >= 1, -1 (all), GPU ids such as [0, 1], "
                            "or auto"),
    ("--trainer.devices=-2", "trainer.devices: -2; expected a count >= 1"),
    ("--trainer.strategy=dpp", "trainer.strategy: 'dpp' is not a strategy; did you mean 'ddp'?"),
    ("--trainer.num_nodes=0", "trainer.num_nodes: expected a count of machines >= 1, got 0"),
    ("--trainer.precision=64", "trainer.precision: 64 (float64) is not supported"),
])
def test_trainer_values_lightning_rejects_with_a_traceback_are_named(workspace, no_gpu, override, needle):
    text = assert_refused(["fit", "--config", shot_recipe(workspace), override], workspace, needle)
    assert "Traceback" not in text


def test_a_source_artifact_given_as_ckpt_path_says_where_it_belongs(workspace):
    assert_refused(["test", "--config", shot_recipe(workspace), "--ckpt_path", "source.pt"], workspace,
                   "source.pt is a source artifact, not a run's checkpoint", "model.init_args.source")


def test_a_model_file_named_by_an_included_recipe_is_found_beside_it(workspace):
    (workspace / "team").mkdir()
    net = "from sfda.models.classifier import SourceClassifier as Net\n"
    (workspace / "team/my_models.py").write_text(net)
    payload = torch.load(workspace / "source.pt", weights_only=True)
    payload["architecture"]["target"] = "my_models.py:Net"
    torch.save(payload, workspace / "external.pt")
    source = {"path": str(workspace / "external.pt"), "architecture": "my_models.py:Net"}
    model = {"class_path": SHOT, "init_args": {"source": source}}
    recipe(workspace / "team/base.yaml", model, folder_data(workspace / "target"), {"max_epochs": 3})
    (workspace / "mine.yaml").write_text("config: team/base.yaml\ntrainer:\n  max_epochs: 1\n")
    code, text = sfda("fit", "--config", "mine.yaml")
    assert code == 0, text[-2000:]
    assert (workspace / "runs/mine/version_0/checkpoints/last.ckpt").is_file()


@pytest.mark.parametrize("override, needle", [
    ("--trainer.max_epochs=${EPOCHS}", "trainer.max_epochs: got ${EPOCHS}; expected int or null; in a recipe "
                                       "an environment variable is ${oc.env:VAR}"),
    ("--trainer.max_epochs=three", "trainer.max_epochs: got three; expected int or null"),
    ('--model={"init_args": {"beta": "${X}"}}', "model: Interpolation key 'X' not found; in a recipe an "
                                                "environment variable is ${oc.env:VAR}"),
])
def test_a_command_line_value_of_the_wrong_type_names_the_key_the_value_and_the_type(workspace, override,
                                                                                      needle):
    text = assert_refused(["fit", "--config", shot_recipe(workspace), override], workspace, needle, status=2)
    assert text.startswith(f"sfda: error: {needle[:20]}")


def test_a_bigger_target_set_with_another_learning_rate_is_not_blamed_on_the_network(adapted):
    digit_images(adapted / "target", ["0"], per_class=8)  # 4 more images than when it was adapted
    text = assert_refused(["fit", "--config", shot_recipe(adapted), "--ckpt_path", LAST,
                           "--trainer.max_epochs=2", "--model.init_args.beta=0.2"], adapted,
                          "does not fit this recipe",
                          "pseudo_labels: (40,) in the checkpoint, (44,) for this recipe", "target set")
    assert "another network" not in text and "beta" not in text


def test_an_interpolation_error_in_an_included_recipe_names_both_files(workspace, base):
    base.write_text(base.read_text().replace("max_epochs: 3", "max_epochs: ${EPOCHS}"))
    (workspace / "mine.yaml").write_text("config: base.yaml\ntrainer:\n  limit_val_batches: 2\n")
    assert_refused(["fit", "--config", "mine.yaml"], workspace, "recipe mine.yaml (or ",
                   "base.yaml, which it includes): trainer.max_epochs: Interpolation key 'EPOCHS' not found",
                   "${oc.env:VAR}")


def test_a_grammar_error_in_a_cycle_of_includes_is_named_without_looping(workspace):
    (workspace / "a.yaml").write_text("config: b.yaml\ntrainer:\n  max_epochs: ${X\n")
    (workspace / "b.yaml").write_text("config: a.yaml\n")
    assert_refused(["fit", "--config", "a.yaml"], workspace, "recipe a.yaml", "with its braces closed")


# --- hunt 13: a misspelt key in a recipe names the recipe file that holds it and the closest key ----
@pytest.mark.parametrize("where", ["direct", "included", "included twice"])
def test_a_misspelt_trainer_key_names_the_recipe_that_holds_it_and_the_closest_key(workspace, where):
    model = {"class_path": SHOT, "init_args": {"source": str(workspace / "source.pt")}}
    recipe(workspace / "base.yaml", model, folder_data(workspace / "target"), {"max_epoch": 3})
    (workspace / "middle.yaml").write_text("config: base.yaml\n")
    given = {"direct": "base.yaml", "included": "mine.yaml", "included twice": "top.yaml"}[where]
    (workspace / "mine.yaml").write_text("config: base.yaml\ntrainer:\n  limit_train_batches: 1\n")
    (workspace / "top.yaml").write_text("config: middle.yaml\n")
    holder = "base.yaml" if where == "direct" else str(workspace / "base.yaml")
    assert_refused(["fit", "--config", given], workspace,
                   f"sfda: error: recipe {holder}: trainer.max_epoch: not an accepted option; did you mean "
                   "'trainer.max_epochs'?", status=2)


def test_a_misspelt_method_argument_in_an_included_recipe_names_that_recipe(workspace):
    model = {"class_path": SHOT, "init_args": {"source": str(workspace / "source.pt"), "bta": 0.3}}
    recipe(workspace / "base.yaml", model, folder_data(workspace / "target"), {"max_epochs": 1})
    (workspace / "mine.yaml").write_text("config: base.yaml\n")
    assert_refused(["fit", "--config", "mine.yaml"], workspace,
                   f"sfda: error: recipe {workspace / 'base.yaml'}: model.init_args.bta: not an argument of "
                   f"{SHOT}; did you mean 'beta'?", status=2)


def test_a_misspelt_trainer_key_on_the_command_line_names_no_recipe(workspace):
    text = assert_refused(["fit", "--config", shot_recipe(workspace), "--trainer.max_epoks=3"], workspace,
                          "sfda: error: trainer.max_epoks: not an accepted option; did you mean "
                          "'trainer.max_epochs'?", status=2)
    assert "recipe " not in text.splitlines()[0]


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


# --- hunt 8: two spellings of one class in an including recipe merge; another class still replaces ----
@pytest.mark.parametrize("model_path, data_path", [
    ("sfda.methods.shot.SHOT", "ImageFolderDataModule"),
    ("SHOT", "sfda.data.ImageFolderDataModule"),
])
def test_an_including_recipe_naming_the_same_class_by_another_spelling_merges(workspace, base, model_path,
                                                                              data_path):
    (workspace / "mine.yaml").write_text(yaml.safe_dump({
        "config": "base.yaml",
        "model": {"class_path": model_path, "init_args": {"beta": 0.5}},
        "data": {"class_path": data_path, "init_args": {"batch_size": 4}}}))
    config = printed_config("--config", "mine.yaml")
    assert config["model"]["init_args"]["rounds"] == 4 and config["model"]["init_args"]["beta"] == 0.5
    assert config["data"]["init_args"]["train"] == str(workspace / "target")
    data = config["data"]["init_args"]
    assert data["eval_batch_size"] == 16 and data["batch_size"] == 4


def test_same_class_compares_what_the_spellings_import():
    assert same_class("sfda.methods.SHOT", "sfda.methods.shot.SHOT")
    assert same_class("SHOT", "sfda.methods.shot.SHOT") and same_class("sfda.methods.SHOT", "SHOT")
    assert not same_class("sfda.methods.SHOT", "sfda.methods.Tent") and not same_class("SHOT", "Tent")
    assert not same_class("Tent", "sfda.methods.SHOT") and not same_class("no.such.Thing", "no.such.Other")


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
