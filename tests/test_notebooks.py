"""The quickstart notebook executes top to bottom (on a subset) and shows adaptation helping."""

import os

import nbformat
import pytest
from conftest import ROOT
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # notebooks run whole CLI flows


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("SFDA_NOTEBOOK_SUBSET", "1200")
    monkeypatch.setenv("SFDA_NOTEBOOK_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("SFDA_DATA", os.environ.get("SFDA_DATA", str(ROOT / "data")))
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
    ).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "adapted accuracy" in text and "corrected" in text


def test_medical_segmentation_notebook_runs(tmp_path, monkeypatch):
    for name, value in {
        "SFDA_NOTEBOOK_SOURCE_EPOCHS": "2",
        "SFDA_NOTEBOOK_EPOCHS": "1",
        "SFDA_NOTEBOOK_SMALL_UNET": "1",
        "SFDA_NOTEBOOK_RUNS": str(tmp_path / "runs"),
        "OMP_NUM_THREADS": "1",
        "SFDA_DATA": os.environ.get("SFDA_DATA", str(ROOT / "data")),
    }.items():
        monkeypatch.setenv(name, value)
    nb = nbformat.read(ROOT / "notebooks" / "medical_segmentation.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
    ).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "adapted Dice" in text and "overlay written" in text
    assert (tmp_path / "runs" / "adapt" / "version_1" / "masks" / "itk.nii.gz").exists()


def test_detection_notebook_runs(tmp_path, monkeypatch):
    for name, value in {
        "SFDA_NOTEBOOK_SOURCE_EPOCHS": "1",
        "SFDA_NOTEBOOK_EPOCHS": "1",
        "SFDA_NOTEBOOK_SOURCE_TILES": "8",
        "SFDA_NOTEBOOK_RUNS": str(tmp_path / "runs"),
        "OMP_NUM_THREADS": "1",
        "SFDA_DATA": os.environ.get("SFDA_DATA", str(ROOT / "data")),
    }.items():
        monkeypatch.setenv(name, value)
    nb = nbformat.read(ROOT / "notebooks" / "detection.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
    ).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "adapted AP50" in text and "overlay written" in text
    payload = (tmp_path / "runs" / "adapt" / "version_1" / "detections.json").read_text()
    assert '"OSBS_029' in payload or "OSBS_029" in payload
