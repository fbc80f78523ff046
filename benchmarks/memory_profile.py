"""Where a sfda run's memory goes: the resident memory of one ``sfda fit`` process over its phases.

    python benchmarks/memory_profile.py --case svhn [--epochs 1] [--train-subset N]

Tool: a thread samples the process's resident set size (``psutil``, every 10 ms) while ``sfda fit`` of the
case's recipe runs in this process (the CLI's ``main``, as ``sfda fit --config ...`` would); the phases are
marked by wrapping the functions that do them (imports and set-up, the source model's evaluation, the
engine's pass over the target set, training steps, validation, the closing test). For each phase it
reports the RSS when the phase started, the highest RSS within it and what it kept when it ended; the
process's peak is ``ru_maxrss``. Rows (MiB) go to ``benchmarks/results/memory.json``, setting
``profile``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import resource
import sys
import threading
import time
import traceback
from pathlib import Path

from common import ROOT, append_rows, row
from reference_loop import CASES, ensure_source

MiB = 1024**2


class Sampler:
    """Samples RSS every ``interval`` seconds; ``mark`` names the phase the following samples belong to."""

    def __init__(self, interval: float = 0.01):
        import psutil

        self.process, self.interval = psutil.Process(), interval
        self.samples: list[tuple[float, str, int]] = []
        self.phase, self.stack = "imports and set-up", []
        self.main_thread = threading.get_ident()
        self.high, self.high_stack = 0, []  # the highest RSS sampled and where the main thread was then
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while self.running:
            rss = self.process.memory_info().rss
            self.samples.append((time.perf_counter(), self.phase, rss))
            if rss > self.high:
                self.high = rss
                frame = sys._current_frames().get(self.main_thread)
                self.high_stack = [f"{Path(f.filename).name}:{f.lineno} {f.name}"
                                   for f in traceback.extract_stack(frame) if "sfda" in f.filename][-6:]
            time.sleep(self.interval)

    def enter(self, phase: str) -> None:
        self.stack.append(self.phase)
        self.phase = phase
        self.samples.append((time.perf_counter(), phase, self.process.memory_info().rss))

    def leave(self) -> None:
        self.samples.append((time.perf_counter(), self.phase, self.process.memory_info().rss))
        self.phase = self.stack.pop()

    def wrap(self, owner, name: str, phase: str) -> None:
        """Mark every call of ``owner.name`` as ``phase`` (the outermost call decides nested ones)."""
        original = getattr(owner, name)

        @functools.wraps(original)
        def marked(*args, **kwargs):
            nested = phase in self.stack or self.phase == phase
            if not nested:
                self.enter(phase)
            try:
                return original(*args, **kwargs)
            finally:
                if not nested:
                    self.leave()

        setattr(owner, name, marked)

    def phases(self) -> dict[str, dict[str, float]]:
        """Per phase: RSS at its first sample, its highest, at its last (MiB), in order of first sight."""
        out: dict[str, dict[str, float]] = {}
        for _, phase, rss in self.samples:
            part = out.setdefault(phase, {"start": rss / MiB, "peak": 0.0, "end": 0.0})
            part["peak"] = max(part["peak"], rss / MiB)
            part["end"] = rss / MiB
        return out


def profile(case: str, epochs: int, train_subset: int | None) -> tuple[Sampler, dict, float]:
    """Run the case's recipe for ``epochs`` under the sampler; (the sampler, results.json, peak MiB)."""
    sampler = Sampler()
    sampler.thread.start()
    import lightning.pytorch as pl

    from sfda.cli import main as sfda_main
    from sfda.tasks.module import TaskModule

    sampler.wrap(TaskModule, "target_pass", "engine pass over the target set")
    sampler.wrap(pl.loops.fit_loop._FitLoop, "advance", "training epoch (steps)")
    sampler.wrap(pl.loops.evaluation_loop._EvaluationLoop, "run", "evaluation (validation, test)")
    sampler.wrap(pl.Trainer, "fit", "fit")
    run_root = ROOT / "benchmarks" / "runs" / "memory" / case
    args = ["fit", "--config", str(ROOT / CASES[case][1]), f"--trainer.max_epochs={epochs}",
            f"--trainer.default_root_dir={run_root}", "--trainer.enable_progress_bar=false"]
    if train_subset:
        args.append(f"--data.init_args.train_subset={train_subset}")
    with contextlib.suppress(SystemExit):
        sfda_main(args)
    sampler.running = False
    sampler.thread.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    import json

    versions = sorted(run_root.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    results = json.loads((versions[-1] / "results.json").read_text())
    return sampler, results, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", choices=sorted(CASES), default="svhn")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-subset", type=int, default=None, help="target training images (default all)")
    parser.add_argument("--label", default="", help="what this run measures (the rows' setting)")
    args = parser.parse_args()
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    ensure_source(args.case)
    started = time.perf_counter()
    sampler, results, peak = profile(args.case, args.epochs, args.train_subset)
    phases = sampler.phases()
    seconds = time.perf_counter() - started
    n = args.train_subset or 60000
    setting = f"profile, {n} target images" + (f", {args.label}" if args.label else "")
    rows = [row(CASES[args.case][0], setting, "sfda fit (SHOT, 1 process)", "peak-rss-mib", peak, seconds,
                run=results, peak_at=list(reversed(sampler.high_stack)),
                notes="ru_maxrss of the whole process; peak_at: the sfda frames of the main thread at the "
                      "highest sample, innermost first")]
    print(f"{CASES[args.case][0]}: peak RSS {peak:,.0f} MiB over {seconds:.0f} s; highest sample "
          f"{sampler.high / MiB:,.0f} MiB at: {' < '.join(reversed(sampler.high_stack))}", file=sys.stderr)
    for phase, part in phases.items():
        start, high, end = part["start"], part["peak"], part["end"]
        print(f"  {phase:34s} start {start:7,.0f}  peak {high:7,.0f}  end {end:7,.0f} MiB", file=sys.stderr)
        rows.append(row(CASES[args.case][0], setting, f"phase: {phase}", "peak-rss-mib", high, seconds,
                        run=results, start_mib=round(part["start"], 1), end_mib=round(part["end"], 1),
                        notes="highest RSS sampled within the phase (psutil, 10 ms)"))
    append_rows("memory", rows)


if __name__ == "__main__":
    main()
