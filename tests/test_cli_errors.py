"""Bad-input catalogue, round 3: messages a user can act on (a checkpoint of another network, an
accelerator the machine lacks, ``${VAR}`` in a recipe, a ``--ckpt_path`` that is a folder or a dangling
link, a ``--config`` that is not a recipe) and recipes that include recipes. Every case asserts the exit
status, that the message names the file or field and the expected value, and that no file of the user's
changed. All run in-process on tiny real files."""

from __future__ import annotations

import pytest
from conftest import ROOT, run_sfda
from kits.bad_input import (
    SHOT,
    assert_refused,
    folder_data,
    recipe,
    shot_recipe,
)


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


@pytest.mark.slow  # a CLI subprocess run
def test_unknown_recipe_key_is_named(tmp_path):
    done = run_sfda("fit", "--config", str(ROOT / "recipes/digits/mnist_optdigits/shot.yaml"),
                    "--model.init_args.betta=0.3", check=False)
    assert done.returncode != 0 and "betta" in done.stderr
