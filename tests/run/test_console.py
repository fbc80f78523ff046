"""The console tells the story: source-only first, a line per epoch, a closing table and the run folder;
plain periodic lines instead of progress bars when the output is not a terminal; after a resume, an
epoch's own seconds."""

import contextlib
import io

import pytest
from kits.bad_input import digit_images, folder_data, recipe, source_artifact
from kits.stops import results, source_recipe, stop_and_resume

from sfda.cli import main
from sfda.run.console import headline


def test_a_run_prints_source_only_each_epoch_and_a_closing_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = [str(i) for i in range(10)]
    digit_images(tmp_path / "target", names, per_class=4)
    source_artifact(tmp_path / "source.pt", names)
    model = {
        "class_path": "sfda.methods.SHOT",
        "init_args": {"source": str(tmp_path / "source.pt"), "beta": 0.1},
    }
    config = recipe(
        tmp_path / "shot.yaml",
        model,
        folder_data(tmp_path / "target"),
        {"max_epochs": 2, "enable_progress_bar": True},
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # not a terminal
        main(["fit", "--config", str(config)])
    text = out.getvalue()
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("source-only before adaptation: acc "))
    epochs = [i for i, line in enumerate(lines) if line.startswith(("epoch 1/2 | acc ", "epoch 2/2 | acc "))]
    assert len(epochs) == 2 and first < epochs[0] and "label-free: entropy" in lines[epochs[0]]
    assert "result: the last epoch (target labels choose nothing)" in text
    table = lines.index(
        next(line for line in lines if line.split() == ["target", "source-only", "last", "epoch"])
    )
    assert table > epochs[1] and lines[table + 1].split()[0] == "acc" and len(lines[table + 1].split()) == 3
    assert "run folder: " in text and "version_0" in text.split("run folder: ")[1]
    assert "it/s" not in text  # no progress bar redraws in a file
    assert sum(line.startswith("epoch 1/2 step") for line in lines) == 1  # one plain line per 30 s at most


def test_headline_keeps_the_summary_scores_only():
    metrics = {"target/acc": 0.9, "target/acc_per_class": 0.8, "target/ap50/Tree": 0.5, "label_free/im": -1.0}
    assert headline(metrics, "target") == {"acc": 0.9, "acc_per_class": 0.8}


def test_the_closing_line_says_which_weights_are_the_result():
    from sfda.methods import SHOT, SegmentationSourceTraining, SourceTraining
    from sfda.run.console import chosen

    assert (
        chosen(SourceTraining.__new__(SourceTraining))
        == "the source artifact from the epoch with the best source_val/acc"
    )
    assert (
        chosen(SegmentationSourceTraining.__new__(SegmentationSourceTraining))
        == "the source artifact from the last epoch"
    )
    assert chosen(SHOT.__new__(SHOT)) == "the last epoch (target labels choose nothing)"


@pytest.mark.slow  # two small in-process fits
def test_the_epoch_a_resumed_run_finishes_prints_its_own_seconds(tmp_path):
    # the checkpoint is written at the validation inside epoch 2, so Lightning resumes that epoch at its
    # end and skips on_train_epoch_start: the clock must not run from 0 (the machine's boot)
    config = source_recipe(tmp_path, epochs=4, check_val_every_n_epoch=2)
    lines = [line for line in stop_and_resume(config, epoch=2).splitlines() if line.startswith("epoch ")]
    assert lines[0].startswith("epoch 2/4") and lines[0].endswith(" s since the resume")
    seconds = float(lines[0].split(" | ")[-1].split()[0])
    assert seconds <= results(tmp_path, 1)["wall_s"]
    assert [line.split(" | ")[0] for line in lines] == ["epoch 2/4", "epoch 3/4", "epoch 4/4"]
    assert not lines[1].endswith("since the resume")
