"""``sfda report RUN_DIR [RUN_DIR ...] [--out report.html]``: one self-contained HTML page of one or
several runs of one task, made from the runs' own files, with its PNGs in ``<out>_files/`` beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import sections
from .page import is_report, render
from .plots import Figures
from .run import ReportInputError, check_one_task, read_run
from .task_sections import BY_TASK


def build_report(run_dirs: list[Path], out: Path) -> Path:
    """Write ``out`` (and ``<out stem>_files/*.png``) for ``run_dirs``; return ``out``."""
    runs = [read_run(Path(d)) for d in run_dirs]
    task = check_one_task(runs)
    if out.exists() and (not out.is_file() or not is_report(out)):
        raise ReportInputError(
            f"--out {out}: the file exists and is not an sfda report; it is left as it is. Give another --out"
        )
    folder = out.parent / f"{out.stem}_files"
    if folder.exists() and any(folder.iterdir()) and not (out.is_file() and is_report(out)):
        raise ReportInputError(f"--out {out}: its figures folder {folder} exists and holds files that no "
                               "sfda report of this page wrote; they are left as they are. Give "
                               "another --out")
    figures = Figures(folder)
    parts = [sections.comparison(runs, figures)] if len(runs) > 1 else []
    for run in runs:
        parts += [sections.summary(run), *sections.stream(run, figures)]
        parts += [sections.curve_sections(run, figures)]
        parts += BY_TASK.get(task, lambda run, figures: [])(run, figures)
        parts += [sections.timing(run, figures), sections.environment(run)]
    title = f"sfda report: {', '.join(run.name for run in runs)} ({task})"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(title, parts), encoding="utf-8")
    return out


def main(argv: list[str]) -> int:
    """The ``sfda report`` command; bad input ends with one line naming the folder (exit status 1)."""
    parser = argparse.ArgumentParser(prog="sfda report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run folders, e.g. runs/shot/version_0")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the HTML file (default: <run>/report.html for one run, report.html for several)",
    )
    args = parser.parse_args(argv)
    out = args.out or (args.run_dirs[0] / "report.html" if len(args.run_dirs) == 1 else Path("report.html"))
    try:
        written = build_report(args.run_dirs, out)
    except ReportInputError as err:
        print(f"sfda report: error: {err}", file=sys.stderr)
        return 1
    print(f"report: {written.resolve()} (figures in {written.parent.resolve() / (written.stem + '_files')})")
    return 0
