"""``sfda sweep``: the search space and its errors, pruning inside a run, workers sharing one study."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import optuna
import pytest
import yaml
from conftest import ROOT
from kits.bad_input import snapshot
from kits.sweep import fake_trials, sweep


def finished(study) -> list:
    """Complete or pruned trials: what n_trials counts."""
    return [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]


def sweep_process(folder, config, space, storage, n_trials):
    command = [
        sys.executable,
        "-m",
        "sfda",
        "sweep",
        "--config",
        str(config),
        "--space",
        str(space),
        "--objective",
        "label_free/im",
        "--n_trials",
        str(n_trials),
        "--storage",
        storage,
        "--study",
        "shared",
        "--sweep_dir",
        str(folder / "sweep"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    env.pop("SFDA_RUN_VERSION", None)
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.slow
def test_two_workers_share_one_study_and_a_rerun_continues_it(tiny):
    folder, config, space = tiny
    storage = f"sqlite:///{folder / 'study.db'}"
    workers = [sweep_process(folder, config, space, storage, 4) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    study = optuna.load_study(study_name="shared", storage=storage)
    done = finished(study)
    assert len(done) >= 4 and any(t.state.name == "COMPLETE" for t in done)
    assert len({t.number for t in done}) == len(done) and len({t.user_attrs["run_dir"] for t in done}) == len(
        done
    )
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both processes ran trials
    rerun = sweep_process(folder, config, space, storage, len(done) + 1)
    assert rerun.wait(timeout=600) == 0
    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(finished(study)) == len(done) + 1 and max(t.number for t in finished(study)) >= len(done)
    rows = list(csv.DictReader(open(folder / "sweep" / "trials.csv")))
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    assert len(rows) == len(study.trials) and complete
    assert all(r["label_free/im"] and r["target/acc"] for r in complete)
    best = yaml.safe_load((folder / "sweep" / "best_recipe.yaml").read_text())
    assert best["model"]["init_args"]["optim"]["lr"] == pytest.approx(
        study.best_trial.params["model.init_args.optim.lr"]
    )


@pytest.mark.parametrize("race", ["table studies already exists",
                                  "UNIQUE constraint failed: alembic_version.version_num"])
def test_workers_racing_to_create_the_rdb_schema_retry(monkeypatch, race):
    """Two workers opening a new SQLite study together: the loser of either race retries, others raise."""
    import optuna

    from sfda.sweep.storage import rdb_storage

    calls = []

    def storage(url, engine_kwargs=None):
        calls.append(url)
        if len(calls) == 1:
            raise RuntimeError(f"(sqlite3.IntegrityError) {race}")
        return "opened"

    monkeypatch.setattr(optuna.storages, "RDBStorage", storage)
    assert rdb_storage("sqlite:///x.db") == "opened" and len(calls) == 2
    calls.clear()
    monkeypatch.setattr(optuna.storages, "RDBStorage",
                        lambda url, engine_kwargs=None: (_ for _ in ()).throw(RuntimeError("no such host")))
    with pytest.raises(RuntimeError, match="no such host"):
        rdb_storage("postgresql://nowhere/db")


# ---- hunt item 1: a file in the sweep folder that the sweep did not write is never changed ---------------


@pytest.mark.parametrize("text", ["my own notes, not an optuna journal\n", '{"a": 1}\n', "[1, 2]\n"])
def test_a_study_log_that_is_not_a_journal_is_refused_naming_it_and_kept(workspace, monkeypatch, text):
    folder, config, space = workspace
    fake_trials(monkeypatch)
    sweep_dir = folder / "sweeps"
    sweep_dir.mkdir()
    (sweep_dir / "study.log").write_text(text)
    before = snapshot(folder)
    code, out = sweep(config, space, sweep_dir, "--n_trials", "1")
    assert code == 1, out
    assert f"{sweep_dir / 'study.log'}: is not a sweep journal" in out and "it is kept as it is" in out, out
    assert snapshot(folder) == before


def test_a_journal_named_by_storage_that_is_not_a_journal_is_refused_and_kept(workspace, monkeypatch):
    folder, config, space = workspace
    fake_trials(monkeypatch)
    notes = folder / "notes.txt"
    notes.write_text("mine\n")
    before = snapshot(folder)
    code, out = sweep(config, space, folder / "sweeps", "--n_trials", "1", "--storage", f"journal://{notes}")
    assert code == 1 and f"{notes}: is not a sweep journal" in out, out
    assert snapshot(folder) == before
