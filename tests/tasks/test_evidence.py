"""`sfda report`: the evidence a run keeps agrees with its results, the page is self-contained and
shows every section of the task, several runs are compared, and bad input gets a clear message."""

from __future__ import annotations

import numpy as np
import pytest

from sfda.report.run import read_run

NAMES = [str(i) for i in range(10)]


def accuracy(predicted: np.ndarray, label: np.ndarray) -> float:
    return float((predicted == label).mean())


@pytest.mark.slow  # the real MNIST source model (a CLI subprocess)
def test_the_evidence_agrees_with_the_run_results(shot_runs):
    run = read_run(shot_runs[0])
    ev, results = run.evidence, run.results
    assert run.task == "classification" and run.method == "SHOT"
    assert accuracy(ev["before_pred"], ev["label"]) == pytest.approx(results["source_only/acc"], abs=1e-6)
    assert accuracy(ev["after_pred"], ev["label"]) == pytest.approx(results["target/acc"], abs=1e-6)
    assert ev["before_features"].shape == ev["after_features"].shape == (len(ev["projected"]), 256)
    assert np.isnan(ev["threshold"]) and list(ev["class_names"]) == NAMES
    for kind, (before_ok, after_ok) in {"corrected": (False, True), "broken": (True, False)}.items():
        at = ev[f"gallery_{kind}_at"]
        assert ((ev["before_pred"][at] == ev["label"][at]) == before_ok).all()
        assert ((ev["after_pred"][at] == ev["label"][at]) == after_ok).all()
        assert ev[f"gallery_{kind}"].shape == (len(at), 28, 28, 3) and ev[f"gallery_{kind}"].dtype == np.uint8
    assert len(ev["gallery_corrected_at"]) > 0  # SHOT corrects some optdigits samples in 2 epochs
    assert [e for e, _ in run.curves["time/epoch_s"]] == [0, 1] and "time/epoch_s" not in results


# the closing pass: the last validation's rows, when they are the network's as it ends ----------------------
def fit_tent(tmp_path, monkeypatch, name: str, *args: str) -> tuple[dict, dict, list[str]]:
    """An in-process ``sfda fit`` of Tent (1 epoch, 40 evaluation images in 3 batches); returns the results,
    the report evidence and the descriptions of every full pass the run made."""
    import json

    from kits.bad_input import digit_images, folder_data, recipe, sfda, source_artifact

    from sfda.tasks.adaptation import Adaptation

    passes = []
    full_pass = Adaptation.full_pass

    def recorded(self, loader, description="engine pass", phase="engine"):
        passes.append(description)
        return full_pass(self, loader, description, phase)

    monkeypatch.setattr(Adaptation, "full_pass", recorded)
    images = digit_images(tmp_path / "digits", NAMES, per_class=4)
    source = source_artifact(tmp_path / "lenet.pt", NAMES)
    model = {"class_path": "sfda.methods.Tent", "init_args": {"source": str(source)}}
    config = recipe(tmp_path / f"{name}.yaml", model, folder_data(images),
                    {"default_root_dir": str(tmp_path / name)})
    code, text = sfda("fit", "--config", str(config), *args)
    assert code == 0, text[-3000:]
    run = tmp_path / name / "version_0"
    evidence = dict(np.load(run / "report" / "classification.npz"))
    return json.loads((run / "results.json").read_text()), evidence, passes


def test_the_report_takes_the_last_validation_when_it_scored_the_whole_split_with_the_final_network(
        tmp_path, monkeypatch):
    results, evidence, passes = fit_tent(tmp_path, monkeypatch, "whole")
    assert "report evidence" not in passes  # no second pass over the evaluation split
    assert len(evidence["label"]) == 40
    after = accuracy(evidence["after_pred"], evidence["label"])
    assert after == pytest.approx(results["target/acc"], abs=1e-6)
    # a validation of part of the split cannot stand for it: the report makes its own pass over all of it
    results, partial, passes = fit_tent(tmp_path, monkeypatch, "partial", "--trainer.limit_val_batches=1")
    assert passes.count("report evidence") == 1 and len(partial["label"]) == 40
    # and that pass, with the same network, gives what the whole validation gave
    assert (partial["after_pred"] == evidence["after_pred"]).all()
    assert np.allclose(partial["after_features"], evidence["after_features"], atol=1e-5)


def test_kept_validation_rows_are_dropped_once_the_network_is_written(tmp_path):
    import torch
    from kits.bad_input import source_artifact

    from sfda.methods import Tent
    from sfda.tasks.module import state_versions

    method = Tent(str(source_artifact(tmp_path / "lenet.pt", NAMES)))
    rows = {"index": torch.arange(3), "labels": torch.tensor([0, 1, 2]), "probs": torch.eye(3),
            "features": torch.ones(3, 4)}
    method.remember_evaluation(rows)
    assert method.unchanged_evaluation()["labels"].tolist() == [0, 1, 2]
    before = state_versions(method.network)
    with torch.no_grad():
        next(method.network.parameters()).add_(0.0)  # an in-place write, even of the same values
    assert state_versions(method.network) != before and method.unchanged_evaluation() is None
    method.remember_evaluation(rows)
    method.network.train()(torch.zeros(2, 1, 28, 28))  # a train-mode forward writes BatchNorm statistics
    assert method.unchanged_evaluation() is None
    with torch.inference_mode():  # a tensor made here keeps no version counter: never taken as unchanged
        method.network.register_buffer("made_in_inference", torch.zeros(1))
    method.remember_evaluation(rows)
    assert state_versions(method.network) is None and method.unchanged_evaluation() is None

