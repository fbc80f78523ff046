"""Every classification method of the registry (``sfda.catalogue.method_classes``) through the real CLI,
in-process, on tiny real digits: fit, test, predict and resume; and each changes only what it promises
(Tent: BatchNorm scale/shift; SHOT, SHOT-IM, NRC, AaD: not the head; source-only: nothing)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from kits.bad_input import source_artifact
from lightning.pytorch.callbacks import Callback

from sfda.catalogue import method_classes, recipes_using, task_of
from sfda.cli import VERSION_ENV, main
from sfda.models import load_artifact

BENCHMARK = "digits/mnist_optdigits"
# classification modules of the registry this test does not run, each with its reason
NOT_HERE = {
    "SourceTraining": "trains the source model on labelled source data, nothing to adapt (conftest's "
    "mnist_source runs its recipe)",
    "GLC": "universal DA: needs a target with classes the source lacks (recipes/universal/, "
    "test_universal.py)",
    "LFTL": "active DA: stops every round for labels (recipes/active/, test_active.py)",
}
# what each method may change in the source network: nothing, BatchNorm scale/shift, or all but the head
PROMISES = {"SourceOnly": "nothing", "Tent": "batchnorm affine", "SHOT": "not the head",
            "NRC": "not the head", "AaD": "not the head"}
TINY = ["--data.init_args.train_subset=128", "--data.init_args.eval_subset=64",
        "--data.init_args.batch_size=32", "--data.init_args.eval_batch_size=64", "--report_evidence=false"]
SEEN: dict[str, dict[str, torch.Tensor]] = {}  # the network a test / predict run used, by stage


def classification_methods() -> list[type]:
    return [cls for cls in method_classes() if task_of(cls) == "classification"]


def covered_recipes() -> dict[str, str]:
    """``{recipe stem: method class name}`` of this benchmark's recipes of the registry's methods."""
    names = [cls.__name__ for cls in classification_methods() if cls.__name__ not in NOT_HERE]
    return {Path(recipe).stem: name for name, recipes in recipes_using(names).items()
            for recipe in recipes if recipe.startswith(BENCHMARK + "/")}


RECIPES = covered_recipes()


class NetworkProbe(Callback):
    """Keeps a copy of the network's state at the end of ``sfda test`` and ``sfda predict``."""

    def on_test_end(self, trainer, pl_module):
        SEEN["test"] = {k: v.clone() for k, v in pl_module.network.state_dict().items()}

    def on_predict_end(self, trainer, pl_module):
        SEEN["predict"] = {k: v.clone() for k, v in pl_module.network.state_dict().items()}


def sfda(*args: str) -> None:
    """``sfda <args>`` in-process; raises with its output when it exits with an error."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            main([*args, "--trainer.enable_progress_bar=false"])
    except SystemExit as done:
        raise AssertionError(f"sfda {' '.join(args)} exited with {done.code}:\n{out.getvalue()[-3000:]}") \
            from None
    except BaseException:
        print(out.getvalue()[-3000:])  # shown by pytest with the traceback
        raise


def assert_promise(promise: str, built: torch.nn.Module, original: dict, adapted: dict) -> None:
    """``adapted`` (a checkpoint's network) differs from the source network ``original`` only where the
    method's promise allows, and somewhere."""
    moved = changed(original, adapted)
    parameters = {name for name, _ in built.named_parameters()}
    if promise == "batchnorm affine":
        norms = [name for name, module in built.named_modules()
                 if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)]
        affine = {f"{norm}.{p}" for norm in norms for p in ("weight", "bias")}
        assert moved and moved <= affine, sorted(moved - affine)
        # Tent normalises with the current batch's statistics: the running ones are dropped, not changed
        statistics = {f"{norm}.{s}" for norm in norms for s in ("running_mean", "running_var")}
        assert set(original) - set(adapted) <= statistics and set(adapted) <= set(original)
    else:
        head = {name for name in parameters if name.startswith(f"network.{built.head_layer}.")}
        assert head and not moved & head, sorted(moved & head)
        assert moved & (parameters - head), "nothing but the head changed"
        assert original.keys() == adapted.keys()


def network_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    return {k.removeprefix("network."): v for k, v in state.items() if k.startswith("network.")}


def changed(before: dict, after: dict) -> set[str]:
    """Names of the tensors present in both whose values differ."""
    return {k for k in before.keys() & after.keys() if not torch.equal(before[k], after[k])}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return source_artifact(tmp_path_factory.mktemp("registry") / "source.pt", [str(d) for d in range(10)])


@pytest.fixture
def clean_version(monkeypatch):
    """In-process runs set the run-version variable; keep it from leaking into later tests."""
    monkeypatch.setenv(VERSION_ENV, "")
    monkeypatch.delenv(VERSION_ENV)


def test_every_classification_method_of_the_registry_is_covered_or_excused():
    registry = {cls.__name__ for cls in classification_methods()}
    run_here = set(RECIPES.values())
    missing = registry - run_here - set(NOT_HERE)
    assert not missing, f"no {BENCHMARK} recipe runs {sorted(missing)}: add one, or an entry in NOT_HERE"
    assert set(NOT_HERE) <= registry, f"stale NOT_HERE entries: {sorted(set(NOT_HERE) - registry)}"
    assert run_here <= set(PROMISES), f"say what {sorted(run_here - set(PROMISES))} may change in PROMISES"


@pytest.mark.usefixtures("clean_version")
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_method_fits_tests_predicts_resumes_and_changes_what_it_promises(recipe, source, tmp_path):
    method = RECIPES[recipe]
    common = ["--config", str(ROOT / "recipes" / BENCHMARK / f"{recipe}.yaml"),
              f"--model.init_args.source={source}", f"--trainer.default_root_dir={tmp_path}", *TINY,
              "--trainer.callbacks+=tests.methods.test_registry.NetworkProbe"]
    built = load_artifact(source).build()
    original = {k: v.clone() for k, v in built.state_dict().items()}
    SEEN.clear()
    if PROMISES[method] == "nothing":  # source-only does not train: the source model is the result
        out = io.StringIO()
        with pytest.raises(SystemExit) as refused:  # one line naming the fix, before anything runs
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                main(["fit", *common, "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"])
        assert "does not train" in f"{refused.value}{out.getvalue()}"
        assert not list(tmp_path.glob("version_*")), "a refused fit left a run folder"
        sfda("test", *common)
        sfda("predict", *common)
        for stage in ("test", "predict"):  # every parameter and buffer, equal
            assert SEEN[stage].keys() == original.keys() and not changed(original, SEEN[stage])
        predictions = tmp_path / "version_1" / "predictions.csv"
    else:
        sfda("fit", *common, "--trainer.max_epochs=1")
        fitted = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
        adapted = network_state(fitted)
        timing = json.loads((tmp_path / "version_0" / "results.json").read_text())
        # steps and validation are disjoint parts of the epoch (the engine's time may lie inside steps)
        assert 0 < timing["timing/steps_s"]
        assert timing["timing/steps_s"] + timing["timing/validation_s"] <= timing["timing/epoch_s"]
        assert timing.get("timing/engine_s", 0.0) <= timing["timing/epoch_s"]
        assert_promise(PROMISES[method], built, original, adapted)
        sfda("test", *common, f"--ckpt_path={fitted}")
        # the adapted network is what was tested
        assert SEEN["test"].keys() == adapted.keys() and not changed(adapted, SEEN["test"])
        results = json.loads((tmp_path / "version_1" / "results.json").read_text())
        assert 0.0 <= results["target/acc"] <= 1.0
        sfda("predict", *common, f"--ckpt_path={fitted}")
        assert SEEN["predict"].keys() == adapted.keys() and not changed(adapted, SEEN["predict"])
        predictions = tmp_path / "version_2" / "predictions.csv"
        # resume: one more epoch from the fit's last checkpoint, and the promise still holds
        sfda("fit", *common, "--trainer.max_epochs=2", f"--ckpt_path={fitted}")
        resumed = tmp_path / "version_3"
        assert json.loads((resumed / "results.json").read_text())["epochs"] == 2
        last = resumed / "checkpoints" / "last.ckpt"
        assert torch.load(last, weights_only=True)["epoch"] == 1
        assert changed(adapted, network_state(last))  # it trained on
        assert_promise(PROMISES[method], built, original, network_state(last))
    with predictions.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 64 and len({row["index"] for row in rows}) == 64  # one row per evaluation sample
