"""The ``sfda`` console script: ``methods``, ``report``, ``sweep`` and ``export`` here, every other subcommand
(``fit``, ``validate``, ``test``, ``predict``, ``--help``) through the LightningCLI of ``sfda.cli``.

    sfda fit --config recipes/digits/svhn_mnist/shot.yaml
    sfda report runs/shot/version_0
    sfda sweep --config <recipe> --space <space.yaml> --n_trials 20
    sfda export runs/shot/version_0 --format onnx
    sfda methods
"""

from __future__ import annotations

import os
import sys

from . import catalogue, cli
from .export import main as export
from .report.command import main as report
from .sweep import main as sweep


def sweep_command(argv: list[str]) -> int:
    """``sfda sweep``: the sweep, resolving its recipe with this command in-process."""
    return sweep(argv, resolve=cli.resolved_recipe)


def export_command(argv: list[str]) -> int:
    """``sfda export``: the run's method loaded with this command's ``loaded_run``."""
    return export(argv, load_run=cli.loaded_run)


# the subcommands that are not LightningCLI's: name -> function of the other arguments, giving the exit status
SUBCOMMANDS = {"report": report, "sweep": sweep_command, "export": export_command}


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``sfda`` console script (``python -m sfda`` too)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    given = sys.argv[1:] if args is None else list(args)
    if given[:1] == ["methods"]:
        print(catalogue.render())
        return
    if given[:1] and given[0] in SUBCOMMANDS:
        raise SystemExit(SUBCOMMANDS[given[0]](given[1:]))
    cli.main(args)
