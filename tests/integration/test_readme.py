"""The README's commands and numbers stay true: the quickstart line is the one the quickstart benchmark
measures, its numbers are that benchmark's, the test commands are what CI runs, and its links resolve."""

import json
import re
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import quickstart  # noqa: E402

README = (ROOT / "README.md").read_text()
INSTALL = ("python3 -m venv .venv && .venv/bin/pip install torch==2.14.1 torchvision==0.29.1 && "
           ".venv/bin/pip install -e . && .venv/bin/sfda fit --config ")
TESTS = (".venv/bin/pip install -e '.[dev,faiss,timm,export]' && .venv/bin/ruff check . && "
         ".venv/bin/python -m pytest -q -n auto --maxprocesses=4")
FAST = '.venv/bin/python -m pytest -q -n auto --maxprocesses=4 -m "not slow and not ddp"'


def test_readme_is_at_most_150_lines():
    assert len(README.splitlines()) <= 150


def test_the_install_line_runs_the_benchmarked_quick_demo():
    line = next(line for line in README.splitlines() if line.startswith(INSTALL))
    assert line == INSTALL + quickstart.RECIPE + " " + " ".join(quickstart.QUICK)
    assert (ROOT / quickstart.RECIPE).is_file()
    # the pinned torch pair is the one CI installs, and the one pyproject accepts
    assert ".venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1" in (ROOT / ".ci" / "run").read_text()


def test_the_quick_demo_numbers_are_the_quickstart_benchmark_rows():
    rows = json.loads((ROOT / "benchmarks" / "results" / "quickstart.json").read_text())
    two = [r for r in rows if r["setting"].startswith("quick demo") and r["setting"].endswith("2 threads")]
    acc = {r["method"]: r["value"] for r in two if r["metric"] == "acc"}
    assert f"source-only {acc['source-only']:.2%} -> SHOT {acc['shot']:.2%}" in README


def test_the_test_commands_are_what_ci_runs():
    assert TESTS in README and FAST in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\n.venv/bin/ruff check .\n" in ci
    assert "\n.venv/bin/python -m pytest -q -n auto --maxprocesses=4\n" in ci
    markers = (ROOT / "pyproject.toml").read_text().split("markers = [", 1)[1].split("]", 1)[0]
    assert '"slow:' in markers and '"ddp:' in markers


def test_the_readme_links_resolve():
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [t for t in targets if "://" not in t]
    assert any(t.startswith("docs/") for t in local)
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"
