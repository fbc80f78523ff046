"""Finished benchmark seeds recorded in git (benchmarks/common.py), reused only from the same weights."""

import sys

import pytest
import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import common  # noqa: E402


def artifact(path, weight: float, note: str):
    torch.save({"format": "sfda-source/1", "note": note,
                "state_dict": {"w": torch.full((2, 3), weight), "n": torch.tensor(4)}}, path)
    return path


def test_the_fingerprint_sees_the_weights_not_the_rest_of_the_file(tmp_path):
    first = common.weights_fingerprint(artifact(tmp_path / "a.pt", 1.0, "made monday"))
    assert first == common.weights_fingerprint(artifact(tmp_path / "b.pt", 1.0, "made tuesday"))
    assert first != common.weights_fingerprint(artifact(tmp_path / "c.pt", 1.0 + 1e-6, "made monday"))


@pytest.fixture
def ledger(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "SEED_RUNS", tmp_path / "seed_runs")
    return tmp_path


def test_a_recorded_seed_is_reused_only_from_the_same_weights_and_seed(ledger):
    source = artifact(ledger / "source.pt", 1.0, "")
    calls = []

    def start():
        calls.append(1)
        return {"target/ap50": 0.5 + len(calls), "history": [1, 2], "epochs": 10}, 12.0

    args = ("detection", "bench", "lpld", 0, source, ledger / "runs" / "seed0", "target/ap50")
    assert common.seed_run(*args, True, start)[0]["target/ap50"] == 1.5  # nothing recorded yet: it runs
    results, seconds = common.seed_run(*args, True, start)
    assert (results, seconds, len(calls)) == ({"target/ap50": 1.5, "epochs": 10}, 12.0, 1)  # reused
    assert common.seed_run(*args, False, start)[0]["target/ap50"] == 2.5  # without reuse it runs again
    other_seed = ("detection", "bench", "lpld", 1, source, ledger / "runs" / "seed1", "target/ap50")
    assert common.seed_run(*other_seed, True, start)[0]["target/ap50"] == 3.5
    artifact(source, 2.0, "")  # retrained to other weights: the record no longer applies
    assert common.seed_run(*args, True, start)[0]["target/ap50"] == 4.5
    assert len(calls) == 4


def test_the_source_of_a_recipe_that_includes_another_is_the_included_one():
    lpld = common.recipe_source("recipes/detection/digits_photos/lpld.yaml")
    assert lpld == common.ROOT / "runs/detection/digits_photos/source.pt"
    # lpld_weight0.yaml holds only `config: lpld.yaml` and the weight
    assert common.recipe_source("recipes/detection/digits_photos/lpld_weight0.yaml") == lpld


def test_pose_suite_reuses_a_finished_source_training_only_while_its_artifact_exists(tmp_path, monkeypatch):
    import json

    import pose

    folder = tmp_path / "runs" / "source" / "version_0"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"source_val/best_pck": 0.4, "epochs": 6, "wall_s": 9.0}))
    (folder / "run_info.json").write_text(json.dumps({"git_commit": "abcdef0123"}))
    trained = []
    monkeypatch.setattr(pose, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(pose, "run_cli", lambda *args: trained.append(args) or (
        {"source_val/best_pck": 0.5, "epochs": 6}, 99.0))
    artifact_file = tmp_path / "source.pt"
    assert pose.train("source", "source training", artifact_file, True)[0][0]["value"] == 0.5  # no artifact
    artifact(artifact_file, 1.0, "")
    rows, _ = pose.train("source", "source training", artifact_file, True)
    assert (rows[0]["value"], rows[0]["seconds"], rows[0]["commit"], len(trained)) == (0.4, 9.0, "abcdef0", 1)
    assert pose.train("source", "source training", artifact_file, False)[0][0]["value"] == 0.5  # no reuse
    assert len(trained) == 2


def test_epoch_means_average_the_newest_runs_logged_steps_per_epoch(tmp_path):
    old, new = tmp_path / "version_1", tmp_path / "version_10"  # numeric order, not text order
    for folder in (old, new):
        folder.mkdir()
    (old / "metrics.csv").write_text("epoch,step,train/loss\n0,1,9.0\n")
    (new / "metrics.csv").write_text(
        "epoch,step,train/loss,target/pck\n0,1,1.0,\n0,2,3.0,\n0,2,,0.5\n1,3,4.0,\n")
    assert common.epoch_means(tmp_path, ["train/loss", "target/pck", "absent"]) == [
        {"epoch": 0, "train/loss": 2.0, "target/pck": 0.5}, {"epoch": 1, "train/loss": 4.0}]
    assert common.epoch_means(tmp_path / "nothing", ["train/loss"]) == []
