"""Stopping a sweep: SIGTERM (a scheduler, ``kill``) or SIGINT (Ctrl-C) is forwarded to the running trial,
whose `sfda fit` stops as it would alone; that trial is not scored, the sweep ends with 128 + the signal's
number, and the study keeps its finished trials, so the same command resumes it.
"""

from __future__ import annotations

import signal
import subprocess
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SweepStopped(RuntimeError):
    """The sweep was stopped by a signal (``signum``); the study is left to be resumed."""

    def __init__(self, signum: int, trial: int | None = None):
        self.signum, self.trial = signum, trial
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class Interrupts:
    """While entered (in the main thread), SIGINT and SIGTERM are recorded instead of ending the sweep,
    and forwarded to the trial process ``run`` is waiting on."""

    def __init__(self):
        self.received: int | None = None
        self.stopped_trial: int | None = None  # the trial the signal stopped, if one was running
        self.child: subprocess.Popen | None = None
        self._previous: dict = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        self.received = self.received or signum
        self._forward(signum)

    def _forward(self, signum: int) -> None:
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    def check(self) -> None:
        """Raise ``SweepStopped`` when a signal was received."""
        if self.received is not None:
            raise SweepStopped(self.received, self.stopped_trial)

    def run(self, command: list[str], env: dict) -> tuple[int, str, str]:
        """Run ``command`` (in its own session, so a terminal's Ctrl-C reaches it once, through us);
        returns its exit status, its stdout and its stderr."""
        with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              encoding="utf-8", errors="replace", start_new_session=True) as child:
            self.child = child
            if self.received is not None:  # a signal that came while the process was starting
                self._forward(self.received)
            try:
                out, err = child.communicate()
            finally:
                self.child = None
        return child.returncode, out, err
