"""Every shipped recipe parses against the code's signatures (a renamed argument breaks it here, not
in a user's run)."""

import contextlib
import io

import pytest
import yaml
from conftest import ROOT

from sfda.cli import main

RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))


def resolved_config(*args: str) -> tuple[int, str, str]:
    """Run ``sfda <args> --print_config`` in-process: (exit code, printed config, error text)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as done:
        main([*args, "--print_config"])
    return done.value.code or 0, out.getvalue(), err.getvalue()


def test_there_is_a_recipe_per_benchmark_family():
    assert {p.relative_to(ROOT / "recipes").parts[0] for p in RECIPES} == {
        "digits",
        "universal",
        "segmentation",
        "active",
        "detection",
        "pose",
        "tta",
    }


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(ROOT / "recipes")))
def test_recipe_resolves_to_sfda_classes(recipe):
    subcommand = "test" if recipe.stem == "source_only" else "fit"  # how the README runs them
    code, printed, error = resolved_config(subcommand, "--config", str(recipe))
    assert code == 0, error[-2000:]
    config = yaml.safe_load(printed)
    assert config["model"]["class_path"].startswith("sfda.") and config["data"]["class_path"].startswith(
        "sfda."
    )


def test_a_misspelt_recipe_key_is_refused_by_name(tmp_path):
    recipe = tmp_path / "shot.yaml"
    recipe.write_text((ROOT / "recipes/digits/svhn_mnist/shot.yaml").read_text().replace("beta:", "betta:"))
    code, _, error = resolved_config("fit", "--config", str(recipe))
    assert code != 0 and "Option 'betta' is not accepted" in error
    # the mistake comes first, on its own line, with the recipe holding it and the closest valid key
    assert error.splitlines()[0] == (
        f"sfda: error: recipe {recipe}: model.init_args.betta: not an argument of sfda.methods.SHOT; "
        "did you mean 'beta'?"
    )
    assert "usage:" not in error


def test_a_misspelt_option_on_the_command_line_gets_the_closest_valid_one():
    code, _, error = resolved_config(
        "fit", "--config", str(ROOT / "recipes/digits/svhn_mnist/shot.yaml"), "--trainer.max_epohcs=3"
    )
    assert code == 2 and error.splitlines()[0] == (
        "sfda: error: trainer.max_epohcs: not an accepted option; did you mean 'trainer.max_epochs'?"
    )
