"""The quickstart notebook executes top to bottom (on a subset) and shows adaptation helping."""

import os

import nbformat
from conftest import ROOT
from nbclient import NotebookClient


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("SFDA_NOTEBOOK_SUBSET", "1200")
    monkeypatch.setenv("SFDA_NOTEBOOK_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("SFDA_DATA", os.environ.get("SFDA_DATA", str(ROOT / "data")))
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "adapted accuracy" in text and "corrected" in text
