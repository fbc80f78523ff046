"""The notebooks execute top to bottom (cut down through environment variables) and show adaptation."""

import json
import os

import nbformat
import pytest
from conftest import ROOT
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # notebooks run whole CLI flows


def run_notebook(name: str, settings: dict, tmp_path, monkeypatch) -> str:
    """Execute ``notebooks/<name>`` with ``settings`` as environment variables (runs under ``tmp_path``,
    1 thread, the shared data cache); returns the text the code cells printed."""
    environment = {"SFDA_NOTEBOOK_RUNS": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1",
                   "SFDA_DATA": os.environ.get("SFDA_DATA", str(ROOT / "data")), **settings}
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}})
    client.execute()
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    text = run_notebook("quickstart.ipynb", {"SFDA_NOTEBOOK_SUBSET": "1200"}, tmp_path, monkeypatch)
    assert "adapted accuracy" in text and "corrected" in text


def test_medical_segmentation_notebook_runs(tmp_path, monkeypatch):
    settings = {"SFDA_NOTEBOOK_SOURCE_EPOCHS": "2", "SFDA_NOTEBOOK_EPOCHS": "1",
                "SFDA_NOTEBOOK_SMALL_UNET": "1"}
    text = run_notebook("medical_segmentation.ipynb", settings, tmp_path, monkeypatch)
    assert "adapted Dice" in text and "overlay written" in text
    assert (tmp_path / "runs" / "adapt" / "version_1" / "masks" / "itk.nii.gz").exists()


def test_detection_notebook_runs(tmp_path, monkeypatch):
    settings = {"SFDA_NOTEBOOK_SOURCE_EPOCHS": "1", "SFDA_NOTEBOOK_EPOCHS": "1",
                "SFDA_NOTEBOOK_SOURCE_TILES": "8"}
    text = run_notebook("detection.ipynb", settings, tmp_path, monkeypatch)
    assert "adapted AP50" in text and "overlay written" in text
    payload = (tmp_path / "runs" / "adapt" / "version_1" / "detections.json").read_text()
    assert "OSBS_029" in payload


def test_pose_notebook_runs(tmp_path, monkeypatch):
    settings = {"SFDA_NOTEBOOK_SOURCE_EPOCHS": "1", "SFDA_NOTEBOOK_EPOCHS": "1", "SFDA_NOTEBOOK_SUBSET": "64"}
    text = run_notebook("pose.ipynb", settings, tmp_path, monkeypatch)
    assert "adapted PCK@0.05" in text and "overlay written" in text
    people = json.loads((tmp_path / "runs" / "adapt" / "version_1" / "keypoints.json").read_text())
    assert len(people) == 64 and len(people[0]["keypoints"]) == 48
