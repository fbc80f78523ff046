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
