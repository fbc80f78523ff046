"""Runs and ``sfda report`` for the report tests: a real 2-epoch SHOT run through the CLI, the report
command in-process, and a refused report's message."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from kits.bad_input import sfda
from sfda.commands import main

ROOT = Path(__file__).resolve().parents[2]  # conftest.ROOT, which this kit cannot import: conftest imports it


def fit_shot(source: Path, root: Path, *extra: str) -> Path:
    """A 2-epoch SHOT run, real MNIST source model -> real optdigits subsets, through the real CLI."""
    code, text = sfda(
        "fit",
        "--config",
        str(ROOT / "recipes/digits/mnist_optdigits/shot.yaml"),
        f"--model.init_args.source={source}",
        f"--trainer.default_root_dir={root}",
        "--trainer.max_epochs=2",
        "--data.init_args.train_subset=300",
        "--data.init_args.eval_subset=300",
        *extra,
    )
    assert code == 0, text
    return sorted(root.glob("version_*"))[-1]


def report_command(*args: str) -> tuple[int, str]:
    """``sfda report <args>`` in-process: (exit status, stderr + stdout)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as done:
        main(["report", *args])
    return done.value.code, err.getvalue() + out.getvalue()


def report_error(*dirs: Path) -> str:
    code, text = report_command(*map(str, dirs))
    assert code == 1, text
    assert text.startswith("sfda report: error: ") and "Traceback" not in text
    return text
