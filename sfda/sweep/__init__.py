"""sfda sweep: label-free hyper-parameter sweeps on Optuna, each trial an `sfda fit` run (see ``study``).

    sfda sweep --config recipes/digits/svhn_mnist/shot.yaml --space space.yaml \\
        --objective label_free/im --n_trials 20 [--storage sqlite:///sweep.db] [--study NAME]
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from ..metrics.validators import DEFAULT_VALIDATOR
from .signals import SweepStopped, signal_name
from .space import SpaceError
from .storage import SweepError
from .study import MAX_CONSECUTIVE_FAILURES, RecipeResolver, Sweep


def stopped_message(sweep: Sweep, stop: SweepStopped, argv: list[str]) -> str:
    """What a stopped sweep tells its user: what was stopped, and the command that resumes the study."""
    trial = "" if stop.trial is None else f"; trial {stop.trial} was stopped with it and is not scored"
    return (
        f"sfda sweep: stopped by {signal_name(stop.signum)}{trial}. Study {sweep.study_name} keeps its "
        f"finished trials ({sweep.storage_url}; trials.csv in {sweep.sweep_dir}); to resume it, run the "
        f"same command again:\n  sfda sweep {shlex.join(argv)}"
    )


def main(argv: list[str], resolve: RecipeResolver) -> int:
    """The ``sfda sweep`` command; bad input ends with one line naming the option (exit status 1).
    ``resolve`` gives a recipe as ``sfda fit --print_config`` would (``sfda.commands`` passes the
    command's own, in-process)."""
    parser = argparse.ArgumentParser(
        prog="sfda sweep",
        description=__doc__.split("\n\n")[0],
        epilog="Arguments after -- are passed to every trial's `sfda fit` (e.g. -- --trainer.max_epochs=5). "
        f"The sweep stops after {MAX_CONSECUTIVE_FAILURES} failed trials in a row. SIGTERM or Ctrl-C stops "
        "the running trial too (not scored) and ends with exit status 128 + the signal's number; the same "
        "command resumes the study.",
    )
    parser.add_argument("--config", required=True, help="the recipe every trial fits")
    parser.add_argument("--space", required=True, help="YAML search space over recipe keys")
    parser.add_argument("--objective", default=DEFAULT_VALIDATOR,
                        help=f"a label-free validator (default {DEFAULT_VALIDATOR}: the smallest worst-case "
                        "regret in benchmarks/selection.py)")
    parser.add_argument("--n_trials", type=int, required=True, help="finished trials the study should hold")
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna RDB URL shared by workers (sqlite:///..., postgresql://...); default: a "
        "journal file in the sweep folder",
    )
    parser.add_argument("--study", default=None, help="study name (default: <recipe>-<validator>)")
    parser.add_argument(
        "--sweep_dir",
        default=None,
        help="folder of the trials (default: runs/sweeps/<study>); one study per folder",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="sampler seed (default: random, so workers differ)"
    )
    parser.add_argument(
        "--pruner",
        choices=["median", "none"],
        default="median",
        help="median: stop a trial whose objective is worse than the median of earlier trials",
    )
    split = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_args(argv[:split]), argv[split + 1 :]
    try:
        sweep = Sweep(
            args.config,
            args.space,
            args.objective,
            args.n_trials,
            args.storage,
            args.study,
            args.sweep_dir,
            args.seed,
            extra,
            args.pruner,
            resolve=resolve,
        )
        trials = sweep.run()
    except SweepStopped as stop:
        print(stopped_message(sweep, stop, argv), file=sys.stderr)
        return 128 + stop.signum
    except (SweepError, SpaceError, ValueError) as err:
        if os.environ.get("SFDA_TRACEBACK"):
            raise
        print(f"sfda sweep: error: {err}", file=sys.stderr)
        return 1
    print(
        f"sweep {sweep.study_name}: trials in {trials}; best recipe in {sweep.sweep_dir / 'best_recipe.yaml'}"
    )
    return 0
