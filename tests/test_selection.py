"""Label-free validators and checkpoint selection by them (a recipe's ``selection``)."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
import yaml
from bad_input_kit import digit_images, folder_data, recipe, sfda, source_artifact

from sfda.metrics import LabelFreeScores
from sfda.metrics.validators import VALIDATORS, batch_nuclear_norm, class_ami, get_validator


def one_hot(labels: list[int], classes: int = 3, confidence: float = 0.98) -> torch.Tensor:
    probs = torch.full((len(labels), classes), (1 - confidence) / (classes - 1))
    probs[torch.arange(len(labels)), torch.tensor(labels)] = confidence
    return probs


def test_every_validator_has_a_direction_and_unknown_names_are_refused_with_the_list():
    assert {v.mode for v in VALIDATORS.values()} <= {"max", "min"}
    assert get_validator("label_free/im") is get_validator("im") and get_validator("im").mode == "min"
    with pytest.raises(
        ValueError, match=r"selection.by: unknown validator 'dev'; expected one of label_free/entropy, "
    ):
        get_validator("dev", "selection.by")


def test_bnm_prefers_confident_and_diverse_predictions_over_collapsed_ones():
    diverse, collapsed = one_hot([0, 1, 2] * 10), one_hot([0] * 30)
    uncertain = torch.full((30, 3), 1 / 3)
    assert batch_nuclear_norm(diverse) > batch_nuclear_norm(collapsed) > 0
    assert batch_nuclear_norm(diverse) > batch_nuclear_norm(uncertain)


def test_class_ami_is_one_when_predictions_follow_the_feature_clusters_and_near_zero_when_not():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(40)
    centres = torch.eye(3, 8) * 10
    features = centres[labels] + 0.1 * torch.randn(120, 8, generator=generator)
    assert float(class_ami(features, one_hot(labels.tolist()))) == pytest.approx(1.0, abs=1e-6)
    shuffled = labels[torch.randperm(120, generator=generator)]
    assert abs(float(class_ami(features, one_hot(shuffled.tolist())))) < 0.1


def test_label_free_scores_drop_padded_repeats_and_compute_what_their_inputs_allow():
    probs, strong = one_hot([0, 1, 2, 1]), one_hot([0, 1, 0, 1])
    features = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    once, padded = LabelFreeScores(), LabelFreeScores()
    once.update(probs, torch.arange(4), features=features, strong=strong)
    padded.update(probs[:2], torch.tensor([0, 1]), features=features[:2], strong=strong[:2])
    padded.update(probs[2:], torch.tensor([2, 3]), features=features[2:], strong=strong[2:])
    padded.update(
        probs[:1], torch.tensor([0]), features=features[:1], strong=strong[:1]
    )  # a sampler's repeat
    a, b = once.compute(), padded.compute()
    assert set(a) == {"entropy", "im", "snd", "bnm", "class_ami", "view_agreement", "marginal_entropy"}
    assert all(torch.allclose(a[k], b[k]) for k in a)
    assert float(a["view_agreement"]) == 0.75
    plain = LabelFreeScores()
    plain.update(probs, torch.arange(4))
    # no features, strong view or teacher
    assert set(plain.compute()) == {"entropy", "im", "snd", "bnm", "marginal_entropy"}


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


@pytest.mark.ddp
def test_validators_do_not_depend_on_the_number_of_processes(mnist_source, tmp_path):
    from conftest import ROOT, results_on_one_and_two_processes

    recipe = str(ROOT / "recipes/digits/mnist_optdigits/source_only.yaml")
    one, two = results_on_one_and_two_processes(
        tmp_path, "test", "--config", recipe, f"--model.init_args.source={mnist_source}",
        "--data.init_args.eval_subset=255", "--data.init_args.eval_strong_view=true",  # 255: uneven shards
    )
    names = ["entropy", "im", "snd", "bnm", "class_ami", "view_agreement"]
    assert all(f"label_free/{n}" in one for n in names)
    for name in names:
        assert two[f"label_free/{name}"] == pytest.approx(one[f"label_free/{name}"], abs=1e-5), name
