"""Issue 27, sweeps: a study writes only in its own folder and scores only the runs its trials started; a
space that cannot be searched is refused before any trial; a sweep stops after a few failed trials in a
row; SIGTERM / Ctrl-C stop the running trial with the sweep, which says how to resume.

Most cases run ``sfda sweep`` in-process with a stand-in for the trials' `sfda fit` (a tiny script that
writes the run folder a real run writes, with its objective taken from the trial's own parameters), so a
score read from any other run shows; the slow cases run real trials.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml
from conftest import ROOT
from kits.sweep import LR, study_trials

from sfda.sweep.signals import Interrupts

LONG = 100_000  # epochs: a trial that only a signal ends


STOP_WITHIN = 120  # seconds from SIGTERM to the end of the sweep and its trial


# ---- item 3: SIGTERM and Ctrl-C stop the sweep and its running trial -----------------------------------


def kill_when_ready(ready, signum) -> None:
    """Send ``signum`` to this process once the file ``ready`` exists (at most 60 s)."""
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(os.getpid(), signum)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_sweep_is_forwarded_once_to_the_running_trial(tmp_path, signum):
    """In-process: the signal is recorded (not raised) and the child gets it once and reports it."""
    report, ready = tmp_path / "got.txt", tmp_path / "ready"
    child = (
        "import pathlib, signal, sys, time\n"
        f"report, ready = pathlib.Path({str(report)!r}), pathlib.Path({str(ready)!r})\n"
        f"signal.signal({int(signum)}, lambda s, f: report.open('a').write(f'{{s}}\\n'))\n"
        "ready.write_text('')\n"
        "deadline = time.time() + 10\n"
        "while not report.exists() and time.time() < deadline:\n"
        "    time.sleep(0.02)\n"
        "time.sleep(0.5)  # long enough for a second delivery to show\n"
        "sys.exit(128 + int(report.read_text().split()[0]) if report.exists() else 0)\n"
    )
    interrupts = Interrupts()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    killer = threading.Thread(target=kill_when_ready, args=(ready, signum))
    with interrupts:
        killer.start()
        code, _, err = interrupts.run([sys.executable, "-c", child], dict(os.environ))
    killer.join()
    assert interrupts.received == signum and code == 128 + signum, err
    assert report.read_text() == f"{int(signum)}\n"  # once: a terminal's Ctrl-C is not delivered twice
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # the handlers are given back


def sweep_process(folder, config, space, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "sfda", "sweep", "--config", str(config), "--space", str(space),
               "--objective", "label_free/im", "--n_trials", "1", "--study", "s", "--sweep_dir",
               str(folder / "sweeps"), "--pruner", "none", "--", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    env.pop("SFDA_RUN_VERSION", None)
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def child_processes(pid: int) -> list[int]:
    """The process ids of ``pid``'s children (Linux)."""
    with contextlib.suppress(OSError):
        return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    return []


@pytest.mark.slow
def test_sigterm_stops_the_sweep_and_its_trial_and_the_study_resumes(workspace):
    folder, config, space = workspace
    sweep_dir = folder / "sweeps"
    process = sweep_process(folder, config, space, f"--trainer.max_epochs={LONG}")
    checkpoints = sweep_dir / "trial_0000" / "version_0" / "checkpoints"
    deadline = time.monotonic() + 300
    children = []
    try:
        while not any(checkpoints.glob("*.ckpt")) and time.monotonic() < deadline:  # an epoch is done
            assert process.poll() is None, process.communicate()
            time.sleep(0.5)
        children = child_processes(process.pid)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=STOP_WITHIN)  # the trial would run for hours unless stopped
    finally:
        if process.poll() is None:  # failed: leave no trial running on
            for pid in [*children, process.pid]:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
    assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "sfda sweep: stopped by SIGTERM; trial 0 was stopped with it and is not scored" in err
    assert "to resume it, run the same command again:\n  sfda sweep --config" in err
    assert (sweep_dir / "trial_0000" / "sfda.log").exists()  # written once the trial process had ended
    trials = study_trials(sweep_dir, "s")
    assert [t.state.name for t in trials] == ["FAIL"]
    assert "stopped by SIGTERM" in trials[0].user_attrs["error"]
    rerun = sweep_process(folder, config, space, "--trainer.max_epochs=1")
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-3000:]
    trials = study_trials(sweep_dir, "s")
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    own = json.loads((sweep_dir / "trial_0001" / "version_0" / "results.json").read_text())
    assert trials[1].value == pytest.approx(own["label_free/im"])  # scored from its own run
    best = yaml.safe_load((sweep_dir / "best_recipe.yaml").read_text())
    assert best["model"]["init_args"]["optim"]["lr"] == pytest.approx(trials[1].params[LR])
