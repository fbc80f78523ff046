"""Label-free validators and checkpoint selection by them (a recipe's ``selection``)."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
import yaml
from kits.bad_input import digit_images, folder_data, recipe, sfda, source_artifact


@pytest.fixture
def tiny(tmp_path):
    names = [str(i) for i in range(10)]
    digit_images(tmp_path / "target", names, per_class=3)
    source = source_artifact(tmp_path / "source.pt", names)
    model = {"class_path": "sfda.methods.SHOT", "init_args": {"source": str(source), "beta": 0.1}}
    return tmp_path, model


def write_recipe(folder, model, selection: dict | None = None, **data) -> str:
    path = recipe(
        folder / "shot.yaml",
        model,
        folder_data(folder / "target", **data),
        {"max_epochs": 3, "default_root_dir": str(folder / "runs")},
    )
    if selection is not None:
        config = yaml.safe_load(path.read_text())
        config["selection"] = selection
        path.write_text(yaml.safe_dump(config))
    return str(path)


def test_the_selected_checkpoint_is_the_validators_best_epoch_and_sfda_test_uses_it(tiny):
    folder, model = tiny
    config = write_recipe(folder, model, {"by": "label_free/entropy"}, eval_strong_view=True)
    code, text = sfda("fit", "--config", config, "--report_evidence=false")
    assert code == 0, text
    run = folder / "runs" / "version_0"
    results = json.loads((run / "results.json").read_text())
    rows = [r for r in csv.DictReader(open(run / "metrics.csv")) if r.get("label_free/entropy")]
    per_epoch = {int(r["epoch"]): float(r["label_free/entropy"]) for r in rows}
    assert len(per_epoch) == 3 and math.isfinite(results["label_free/view_agreement"])
    assert results["selected/epoch"] == min(per_epoch, key=per_epoch.get)
    assert results["selected/score"] == pytest.approx(min(per_epoch.values()))
    assert results["selected/by"] == "label_free/entropy" and results["selected/mode"] == "min"
    accuracy = {int(r["epoch"]): float(r["target/acc"]) for r in rows}
    assert results["selected/target/acc"] == pytest.approx(
        accuracy[results["selected/epoch"]]
    )  # reported, not chosen
    selected = run / results["selected/checkpoint"]
    assert (
        selected.is_file() and torch.load(selected, weights_only=True)["epoch"] == results["selected/epoch"]
    )
    code, text = sfda("test", "--config", config)
    assert code == 0, text
    assert f"using the selected checkpoint {selected}" in text
    from sfda.report.command import build_report

    page = build_report([run], folder / "report.html").read_text()
    assert "picked by label_free/entropy (min" in page and ">selected<" in page
    tested = json.loads((folder / "runs" / "version_1" / "results.json").read_text())
    assert tested["target/acc"] == pytest.approx(results["selected/target/acc"])
    plain = write_recipe(folder, model)  # the same recipe without selection
    code, text = sfda("fit", "--config", plain, "--report_evidence=false")
    assert code == 0, text
    code, text = sfda("test", "--config", config)  # the newest fit selected nothing: no silent older pick
    assert code != 0 and "without --ckpt_path this would report the untrained or unadapted model" in text


@pytest.mark.parametrize(
    "selection, needle",
    [
        (
            {"by": "label_free/dev"},
            "selection.by: unknown validator 'label_free/dev'; expected one of label_free/entropy",
        ),
        (
            {"by": "label_free/snd", "mode": "min"},
            "selection.mode = min: label_free/snd is better when higher; expected mode: max",
        ),
        (
            {"by": "label_free/view_agreement"},
            "selection.by = label_free/view_agreement: SHOT does not log it",
        ),
    ],
)
def test_a_selection_that_cannot_work_is_refused_by_field(tiny, selection, needle):
    folder, model = tiny
    code, text = sfda("fit", "--config", write_recipe(folder, model, selection), "--report_evidence=false")
    assert code != 0 and needle in text, text[-2000:]


def test_ckpt_path_selected_without_a_selected_run_is_refused(tiny):
    folder, model = tiny
    code, text = sfda("test", "--config", write_recipe(folder, model), "--ckpt_path=selected")
    assert (
        code != 0
        and "--ckpt_path selected: no run under" in text
        and "set selection.by in the recipe" in text
    )
