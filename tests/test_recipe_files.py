"""Bad-input catalogue, round 3: messages a user can act on (a checkpoint of another network, an
accelerator the machine lacks, ``${VAR}`` in a recipe, a ``--ckpt_path`` that is a folder or a dangling
link, a ``--config`` that is not a recipe) and recipes that include recipes. Every case asserts the exit
status, that the message names the file or field and the expected value, and that no file of the user's
changed. All run in-process on tiny real files."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch
import yaml
from kits.bad_input import (
    SHOT,
    assert_refused,
    folder_data,
    recipe,
    sfda,
    shot_recipe,
)

from sfda.cli import main
from sfda.recipe_files import same_class

LAST = "runs/shot/version_0/checkpoints/last.ckpt"


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


def test_a_missing_recipe_file_is_named(workspace):
    assert_refused(["fit", "--config", str(workspace / "nope.yaml")], workspace, "nope.yaml", status=2)
