"""`sfda report`: the evidence a run keeps agrees with its results, the page is self-contained and
shows every section of the task, several runs are compared, and bad input gets a clear message."""

from __future__ import annotations

import json
import shutil

import pytest
from kits.report import report_error

from sfda.report.run import ReportInputError, read_run

# bad input -------------------------------------------------------------------------------------


def test_a_folder_that_is_not_a_run_is_named(tmp_path, tiny_run):
    (tmp_path / "empty").mkdir()
    assert f"{tmp_path / 'empty'} is not a run folder" in report_error(tmp_path / "empty")
    assert "does not exist" in report_error(tmp_path / "missing")
    root = tiny_run.parent  # runs/shot: holds runs, is not one
    assert "it holds the runs version_0: give one of them" in report_error(root)


def test_a_run_that_failed_before_its_first_epoch_is_named(tmp_path, tiny_run):
    broken = tmp_path / "failed" / "version_0"
    broken.mkdir(parents=True)
    for name in ("config.yaml", "run_info.json"):
        shutil.copy(tiny_run / name, broken / name)
    text = report_error(broken)
    assert str(broken) in text and "failed or was stopped before its first epoch ended" in text
    assert "no results.json" in text


def test_runs_of_different_tasks_are_refused_naming_each_task(tmp_path, tiny_run):
    other = tmp_path / "seg" / "version_0"
    shutil.copytree(tiny_run, other)
    info = json.loads((other / "run_info.json").read_text())
    (other / "run_info.json").write_text(json.dumps({**info, "task": "segmentation"}))
    text = report_error(tiny_run, other)
    assert "runs of different tasks" in text and f"{tiny_run} (classification)" in text
    assert f"{other} (segmentation)" in text


def test_damaged_run_files_are_named(tmp_path, tiny_run):
    damaged = tmp_path / "damaged" / "version_0"
    shutil.copytree(tiny_run, damaged)
    (damaged / "report" / "classification.npz").write_bytes(b"not an npz")
    assert f"{damaged / 'report' / 'classification.npz'}: unreadable report evidence" in report_error(damaged)
    (damaged / "report" / "classification.npz").unlink()
    (damaged / "results.json").write_text("{")
    assert f"{damaged / 'results.json'}: not valid JSON" in report_error(damaged)
    with pytest.raises(ReportInputError):
        read_run(damaged)
