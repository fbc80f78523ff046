"""Where a sfda epoch's time goes: one SHOT epoch under cProfile, summed into the framework's parts.

    python benchmarks/profile_epoch.py [--case lenet|svhn] [--stats FILE]

Tool: Python's cProfile over ``sfda fit`` in this process (the CLI's ``main``), one epoch of the case's
recipe on all 60k MNIST training images (source-only evaluation off, validation on). The parts are the
cumulative times of the functions that do them, so they nest: the engine pass holds its own data
loading and forwards, and training steps hold the forward and the loss. cProfile adds its own cost per
Python call (the epoch runs slower than unprofiled); compare parts with each other, not with
``reference_loop.py``'s seconds. Rows (seconds per part, and the profiled epoch) go to
``benchmarks/results/profile.json``; ``--stats`` keeps the raw profile for ``python -m pstats``.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats

from common import ROOT, append_rows, row
from reference_loop import CASES, ensure_source

# part -> (what it is, the function(s) whose cumulative time measures it: (file suffix, function name))
PARTS = {
    "fit loop": ("the whole epoch: engine pass, steps, validation, checkpoint",
                 [("loops/fit_loop.py", "run")]),
    "engine pass": ("eval-mode pass over the target set at the epoch start",
                    [("tasks/module.py", "target_pass")]),
    "centroid labels": ("SHOT's centroid labelling on the pass's rows", [("pseudo_labels/clustering.py",
                                                                         "centroid_labels")]),
    "data": ("loading and collating batches, every loader (inside the parts above and below)",
             [("utils/data/dataloader.py", "__next__")]),
    "image pipeline": ("decode, resize, normalise of each image (part of data)",
                       [("sfda/data/datasets.py", "__getitem__")]),
    "training step": ("forward + loss of each step", [("methods/shot.py", "training_step")]),
    "backward": ("autograd backward", [("torch/_tensor.py", "backward")]),
    "optimizer": ("SGD's parameter updates", [("torch/optim/sgd.py", "sgd")]),
    "keyed dropout": ("process-count-independent dropout masks", [("models/keyed_dropout.py", "forward")]),
    "global batchnorm": ("BatchNorm of the global batch (only under DDP)", [("models/norm.py", "forward")]),
    "logging": ("self.log calls", [("logger_connector/result.py", "log")]),
    "progress bar": ("progress display (plain lines in a log file)",
                     [("sfda/run/console.py", "on_train_batch_end")]),
    "callbacks": ("every callback hook (run record, seeding, checkpoints, console)",
                  [("trainer/call.py", "_call_callback_hooks")]),
    "validation": ("the epoch's validation with the label-free validators",
                   [("loops/evaluation_loop.py", "run")]),
}


def cumulative(stats: pstats.Stats, wanted: list[tuple[str, str]]) -> float:
    """Summed cumulative seconds of the functions named by ``(file suffix, name)``."""
    total = 0.0
    for (path, _, name), (_, _, _, cum, _) in stats.stats.items():
        if any(path.endswith(suffix) and name == function for suffix, function in wanted):
            total += cum
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=list(CASES), default="lenet")
    parser.add_argument("--stats", help="also write the raw cProfile stats here")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    from sfda.cli import main as sfda

    ensure_source(args.case)
    bench, recipe = CASES[args.case]
    profiler = cProfile.Profile()
    argv = ["fit", "--config", str(ROOT / recipe), "--trainer.max_epochs=1",
            "--model.init_args.evaluate_source=false", "--report_evidence=false",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={ROOT / 'benchmarks' / 'runs' / 'profile' / args.case}"]
    profiler.runcall(sfda, argv)
    if args.stats:
        profiler.dump_stats(args.stats)
    stats = pstats.Stats(profiler)
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    rows = []
    for part, (meaning, functions) in PARTS.items():
        seconds = cumulative(stats, functions)
        print(f"{part:18s} {seconds:8.2f} s  {meaning}")
        rows.append(row(bench, f"closed, 60000 target images, cProfile, {threads} thread(s)", "shot",
                        f"profile/{part}", seconds, seconds, epochs=1,
                        notes=f"{meaning}; cumulative seconds under cProfile (parts nest), "
                              f"benchmarks/profile_epoch.py --case {args.case}"))
    if not args.no_record:
        print(f"-> {append_rows('profile', rows).name}")


if __name__ == "__main__":
    main()
