"""`sfda report`: the evidence a run keeps agrees with its results, the page is self-contained and
shows every section of the task, several runs are compared, and bad input gets a clear message."""

from __future__ import annotations

import re
import shutil

import lightning as L
import pytest
from conftest import ROOT
from kits.bad_input import digit_images, folder_data, recipe, sfda, source_artifact
from kits.detection import detection_artifact, digit_sets
from kits.report import report_command, report_error
from PIL import Image

from sfda.report.command import build_report
from sfda.report.run import read_run
from sfda.run.recorder import RunRecorder
from sfda.tasks.evidence import ReportEvidence

NAMES = [str(i) for i in range(10)]


def images_of(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', page)


def test_a_classification_report_is_one_self_contained_page(tiny_run, tmp_path):
    out = build_report([tiny_run], tmp_path / "report.html")
    page = out.read_text()
    pngs = sorted((tmp_path / "report_files").glob("*.png"))
    sources = images_of(page)
    assert len(sources) == len(pngs) >= 6 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert all(Image.open(p).size[0] > 100 for p in pngs)
    for shown in ("class_accuracy", "confusion", "projection", "scores", "label_free_", "epoch_seconds"):
        assert any(shown in p.name for p in pngs), shown
    assert "resolved recipe (config.yaml)" in page and "sfda.methods.SHOT" in page and "git_commit" in page
    assert not re.search(r"https?://|<script|<link", page)  # opens from disk, nothing fetched, nothing run
    assert "rejection" not in " ".join(p.name for p in pngs)  # a closed-set run has no unknowns


@pytest.mark.slow  # the real MNIST source model (a CLI subprocess)
def test_a_run_that_rejects_unknowns_gets_the_rejection_histogram(shot_runs, tmp_path):
    assert read_run(shot_runs[1]).evidence["threshold"] == pytest.approx(0.5)
    build_report([shot_runs[1]], tmp_path / "r.html")
    assert any("rejection" in p.name for p in (tmp_path / "r_files").glob("*.png"))


@pytest.mark.slow  # the real MNIST source model (a CLI subprocess)
def test_several_runs_get_a_comparison_table_and_shared_curves(shot_runs, tmp_path):
    page = build_report(shot_runs, tmp_path / "both.html").read_text()
    assert "comparison of the runs" in page and "shot/version_0" in page and "shot/version_1" in page
    assert any("compare_acc" in p.name for p in (tmp_path / "both_files").glob("*.png"))


def test_the_command_writes_the_report_inside_the_run_by_default(tiny_run, tmp_path):
    copy = tmp_path / "shot" / "version_0"
    shutil.copytree(tiny_run, copy)
    code, text = report_command(str(copy))
    assert code == 0 and (copy / "report.html").is_file() and str((copy / "report.html").resolve()) in text


def test_evidence_can_be_switched_off(tmp_path):
    digit_images(tmp_path / "target", NAMES, per_class=2)
    source_artifact(tmp_path / "source.pt", NAMES)
    model = {"class_path": "sfda.methods.SHOT", "init_args": {"source": str(tmp_path / "source.pt")}}
    config = recipe(
        tmp_path / "off.yaml",
        model,
        folder_data(tmp_path / "target"),
        {"default_root_dir": str(tmp_path / "off")},
    )
    code, text = sfda("fit", "--config", str(config), "--report_evidence=false")
    assert code == 0, text
    assert (tmp_path / "off" / "version_0" / "results.json").is_file()
    assert not (tmp_path / "off" / "version_0" / "report").exists()
    page = build_report([tmp_path / "off" / "version_0"], tmp_path / "off.html").read_text()
    assert "no per-sample evidence" in page  # said, not silently missing


# bad input -------------------------------------------------------------------------------------


def test_an_existing_file_that_is_not_a_report_is_not_replaced(tmp_path, tiny_run):
    mine = tmp_path / "notes.html"
    mine.write_text("<html>my notes</html>")
    text = report_error(tiny_run, "--out", mine)
    assert f"--out {mine}: the file exists and is not an sfda report" in text
    assert mine.read_text() == "<html>my notes</html>"
    (tmp_path / "notes_files").mkdir()
    (tmp_path / "notes_files" / "01_mine.png").write_bytes(b"mine")
    mine.unlink()
    text = report_error(tiny_run, "--out", mine)  # the page is gone, its figures folder holds a user's file
    assert "its figures folder" in text and (tmp_path / "notes_files" / "01_mine.png").read_bytes() == b"mine"
    build_report([tiny_run], tmp_path / "again.html")
    first = sorted(p.name for p in (tmp_path / "again_files").glob("*.png"))
    build_report([tiny_run], tmp_path / "again.html")  # a report replaces its own page and figures
    assert sorted(p.name for p in (tmp_path / "again_files").glob("*.png")) == first


# detection: overlays of source-only, adapted and reference boxes -----------------------------------
@pytest.mark.slow  # a Faster R-CNN epoch in process (5 s): keeps the fast tier under 3 minutes
def test_a_detection_run_keeps_overlays_and_reports_them(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    from sfda.data import DetectionDataModule
    from sfda.methods import MeanTeacherDetection

    sets = digit_sets(tmp_path, train=4, test=2)
    L.seed_everything(0)
    data = DetectionDataModule(
        [str(sets["photo"])], eval=[str(sets["photo_test"])], role="target", batch_size=2, eval_batch_size=2
    )
    method = MeanTeacherDetection(str(detection_artifact(tmp_path / "detector.pt")))
    trainer = L.Trainer(
        max_epochs=1,
        logger=CSVLogger(tmp_path, name="runs", version=0),
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[RunRecorder(), ReportEvidence()],
    )
    trainer.fit(method, datamodule=data)
    run = tmp_path / "runs" / "version_0"
    overlays = sorted((run / "report" / "overlays").glob("*.png"))
    assert len(overlays) == 2
    width, _ = Image.open(overlays[0]).size
    assert width == 3 * 128  # source-only | this model | reference, at the model's input size
    (run / "config.yaml").write_text("model:\n  class_path: sfda.methods.MeanTeacherDetection\n")
    page = build_report([run], tmp_path / "det.html").read_text()
    assert "(detection)" in page and "overlays: source-only | adapted | reference" in page
    names = [p.name for p in (tmp_path / "det_files").glob("*.png")]
    assert sum(any(n.endswith(f"{o.stem}.png") for o in overlays) for n in names) == 2
    assert any("ap50_per_class" in n for n in names)


def test_the_readme_shows_a_report_screenshot_under_300_kb():
    readme = (ROOT / "README.md").read_text()
    assert "![sfda report of the quick demo](benchmarks/results/report_screenshot.png)" in readme
    shot = ROOT / "benchmarks" / "results" / "report_screenshot.png"
    assert shot.stat().st_size < 300_000 and Image.open(shot).size[0] >= 600
