"""Source-free active DA: budget, query strategies, sealed labels, annotators, rounds, resume, DDP."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from conftest import results_of, run_sfda
from kits.active import round_record, small_run
from kits.bad_input import (
    snapshot,
)

from sfda.active import FileAnnotator, LabelsFileError
from sfda.active.annotators import read_labels_file
from sfda.data import DigitsDataModule


def test_labels_file_errors_name_the_file_and_line(tmp_path):
    images = {5: "/x/5.png", 9: "/x/9.png"}
    names = ["cat", "dog"]
    path = tmp_path / "labels.csv"
    cases = {"index,label\n5,dog\n7,cat\n": r"labels.csv:3: index '7' was not queried",
             "index,label\n5,bird\n": r"labels.csv:2: label 'bird' is neither a class id in \[0, 2\)",
             "index,label\n5,1\n9,0\n5,0\n": r"labels.csv:4: sample 5 is labelled twice \(first on line 2\)",
             "id,class\n5,1\n": r"labels.csv:1: expected the header",
             "image,label\n/y/1.png,cat\n": r"labels.csv:2: image '/y/1.png' was not queried"}
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(LabelsFileError, match=message):
            read_labels_file(path, images, names)
        assert path.read_text() == text  # the person's file is never rewritten
    path.write_text("image,label\n/x/9.png,dog\n5,\n")
    with pytest.raises(LabelsFileError, match="labels.csv:3: image '5' was not queried"):
        read_labels_file(path, images, names)
    path.write_text("index,label\n9,dog\n5,0\n")
    assert read_labels_file(path, images, names) == {9: 1, 5: 0}


def test_file_annotator_stops_cleanly_until_every_queried_sample_is_labelled(tmp_path):
    dm = DigitsDataModule("optdigits", role="target", train_subset=50)
    dm.setup()
    annotator = FileAnnotator(str(tmp_path / "ann"))
    with pytest.raises(SystemExit) as stopped:
        annotator.annotate(1, np.array([4, 2]), dm, tmp_path, True)
    assert stopped.value.code == 0 and "2 of 2 queried samples still need a label" in stopped.value.message
    rows = list(csv.DictReader(open(tmp_path / "ann" / "round_01" / "to_label.csv")))
    assert [r["index"] for r in rows] == ["4", "2"]
    assert all((tmp_path / "ann" / "round_01" / "images" / f"{i}.png").exists() for i in (4, 2))
    (tmp_path / "ann" / "round_01" / "labels.csv").write_text("index,label\n2,7\n")
    with pytest.raises(SystemExit, match="0"):
        annotator.annotate(1, np.array([4, 2]), dm, tmp_path, True)
    (tmp_path / "ann" / "round_01" / "labels.csv").write_text(f"image,label\n{rows[0]['image']},3\n2,7\n")
    # mixing keys is refused, line named
    with pytest.raises(LabelsFileError, match=r"labels.csv:3: image '2' was not queried"):
        annotator.annotate(1, np.array([4, 2]), dm, tmp_path, True)
    (tmp_path / "ann" / "round_01" / "labels.csv").write_text("index,label\n2,7\n4,3\n")
    assert annotator.annotate(1, np.array([4, 2]), dm, tmp_path, True).tolist() == [3, 7]


@pytest.mark.slow  # a CLI subprocess run
def test_a_person_labels_between_rounds_and_the_run_ends_like_an_uninterrupted_one(mnist_source, tmp_path):
    run_sfda(*small_run(mnist_source, tmp_path / "stored"))
    stored = results_of(tmp_path / "stored")
    people = tmp_path / "people"
    args = small_run(mnist_source, people, "--model.init_args.annotator=sfda.active.FileAnnotator")
    truth = dict(round_record(tmp_path / "stored", 0, 1) + round_record(tmp_path / "stored", 0, 2))

    def label(round_index, keep=None):
        folder = people / "annotations" / f"round_{round_index:02d}"
        rows = list(csv.DictReader(open(folder / "to_label.csv")))[:keep]
        (folder / "labels.csv").write_text(
            "index,label\n" + "".join(f"{r['index']},{truth[int(r['index'])]}\n" for r in rows))

    first = run_sfda(*args)  # round 1 waits for labels: clean exit, nothing trained
    assert "Round 1: 6 of 6 queried samples still need a label" in first.stderr
    assert not (people / "version_0" / "results.json").exists()
    label(1)
    second = run_sfda(*args)  # round 1 trains, round 2 waits
    last = people / "version_1" / "checkpoints" / "last.ckpt"
    assert "Round 2: 6 of 6" in second.stderr and f"--ckpt_path={last}" in second.stderr
    label(2, keep=2)  # partly labelled: still waits, and points at the same checkpoint
    third = run_sfda(*args, f"--ckpt_path={last}")
    assert "Round 2: 4 of 6" in third.stderr and f"--ckpt_path={last}" in third.stderr
    label(2)
    run_sfda(*args, f"--ckpt_path={last}")
    resumed = results_of(people, 3)
    assert round_record(people, 1, 1) == round_record(tmp_path / "stored", 0, 1)
    # same queried set after the restart
    assert round_record(people, 3, 2) == round_record(tmp_path / "stored", 0, 2)
    assert resumed["target/acc"] == stored["target/acc"]
    assert resumed["round_1/target/acc"] == stored["round_1/target/acc"]
    end = torch.load(people / "version_3" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    reference = torch.load(tmp_path / "stored" / "version_0" / "checkpoints" / "last.ckpt",
                           weights_only=True)["state_dict"]
    for key in ("anchors.features", "given_labels", "query_round", "previous.probs"):
        assert torch.equal(end[key], reference[key]), key


def labels_file(workspace, text: str, encoding="utf-8"):
    from sfda.active.annotators import read_labels_file

    path = workspace / "labels.csv"
    path.write_bytes(text.encode(encoding))
    before = path.read_bytes()
    try:
        return read_labels_file(path, {4: "a.png", 9: "b.png"}, ["cat", "dog"])
    finally:
        assert path.read_bytes() == before


def test_a_spreadsheet_labels_file_with_bom_and_crlf_is_read(workspace):
    assert labels_file(workspace, "index,label\r\n4,dog\r\n9,0\r\n", encoding="utf-8-sig") == {4: 1, 9: 0}


@pytest.mark.parametrize(
    "text, needle",
    [
        ("index,label\n4,horse\n", "labels.csv:2: label 'horse'"),
        ("index,label\n4,dog\n4,cat\n", "labels.csv:3: sample 4 is labelled twice"),
        ("index,label\n5,dog\n", "labels.csv:2: index '5' was not queried"),
        ("idx,lab\n4,dog\n", "labels.csv:1: expected the header"),
    ],
)
def test_bad_labels_files_name_the_line(workspace, text, needle):
    from sfda.active.annotators import LabelsFileError

    with pytest.raises(LabelsFileError, match=needle):
        labels_file(workspace, text)


def test_a_stale_labels_file_of_another_query_is_refused(workspace):
    from sfda.active import FileAnnotator, LabelsFileError
    from sfda.data import ImageFolderDataModule

    data = ImageFolderDataModule(str(workspace / "target"), class_names=[str(i) for i in range(10)])
    data.setup()
    annotator = FileAnnotator(str(workspace / "annotations"))
    with pytest.raises(SystemExit):  # round 1 asks for labels: to_label.csv is written for an image folder
        annotator.annotate(1, np.array([0, 1]), data, workspace, True)
    (workspace / "annotations/round_01/labels.csv").write_text("index,label\n0,0\n1,0\n")
    assert annotator.annotate(1, np.array([0, 1]), data, workspace, True).tolist() == [0, 0]
    before = snapshot(workspace / "annotations")
    with pytest.raises(LabelsFileError, match="written for another query"):
        annotator.annotate(1, np.array([5, 6]), data, workspace, True)
    assert snapshot(workspace / "annotations") == before
