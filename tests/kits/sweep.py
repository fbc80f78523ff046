"""The sweep tests' helpers: a stand-in for the trials' ``sfda fit`` (FAKE_FIT, ``fake_trials``),
``sfda sweep`` run in-process (``sweep``), a study's trials read from its journal, and a space file.
The sweep tests' fixtures (``workspace``, ``tiny``) are in tests/sweep/conftest.py."""

from __future__ import annotations

import contextlib
import io
import json
import sys

import optuna

from sfda.commands import sweep_command as sweep_main
from sfda.sweep.study import Sweep

LR = "model.init_args.optim.lr"


# a stand-in for a trial's `sfda fit`: argv[1] the trial folder, argv[2] its parameters (JSON), argv[3]
# what to do ("ok": write version_0/results.json with label_free/im = 1000 * lr; "sigterm": the same, then
# exit 143 as a run a signal stopped; anything else: fail with that text as its error line)
FAKE_FIT = """
import json, pathlib, sys
root, params, mode = pathlib.Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
if mode not in ("ok", "sigterm"):
    sys.exit(print(mode, file=sys.stderr) or 1)
run = root / "version_0"
run.mkdir(parents=True)
lr = params["model.init_args.optim.lr"]
(run / "results.json").write_text(json.dumps({"label_free/im": 1000 * lr, "target/acc": lr}))
sys.exit(143 if mode == "sigterm" else 0)
"""


def fake_trials(monkeypatch, mode: str = "ok") -> None:
    """Trials run FAKE_FIT instead of `sfda fit`."""

    def command(self, root, params, pruning=()):
        return [sys.executable, "-c", FAKE_FIT, str(root), json.dumps(params), mode]

    monkeypatch.setattr(Sweep, "command", command)


def sweep(config, space, sweep_dir, *options: str) -> tuple[int, str]:
    """``sfda sweep`` in-process: (exit status, stderr + stdout)."""
    out, err = io.StringIO(), io.StringIO()
    args = ["--config", str(config), "--space", str(space), "--objective", "label_free/im",
            "--sweep_dir", str(sweep_dir), "--seed", "0", "--pruner", "none", *options]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = sweep_main(args)
    return code, err.getvalue() + out.getvalue()


def study_trials(sweep_dir, name: str) -> list:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep_dir / "study.log"))
    )
    return optuna.load_study(study_name=name, storage=storage).trials




def write_space(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path

