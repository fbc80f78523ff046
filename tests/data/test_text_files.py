"""The bad-input catalogue, annotation files that lie: COCO boxes, COCO keypoints and medical volumes.
Every refusal asserts the exit status (through the CLI) or the error, that the message names the file
and the field and the expected value, and that the user's files are unchanged. Crowd regions are
checked to be neither trained on nor scored. All cases run in-process on tiny real files."""

from __future__ import annotations

import json

import pytest
from kits.coco import COCO, coco_file

from sfda.active.annotators import read_labels_file
from sfda.data.boxes import read_coco, read_csv
from sfda.data.keypoints import read_people
from sfda.data.volumes import read_datalist

DIGITS = [str(d) for d in range(10)]


def test_annotation_files_saved_as_utf16_with_a_bom_are_read(user):
    """Every text file a user hands in goes through one reader: a spreadsheet's or Windows' UTF-16 with a
    byte-order mark reads as the same annotations as UTF-8."""
    utf8 = read_coco(str(coco_file(user)))
    wide = user / "wide.json"
    wide.write_text(json.dumps(COCO), encoding="utf-16")
    assert [r.boxes.tolist() for r in read_coco(str(wide))] == [r.boxes.tolist() for r in utf8]
    table = user / "boxes.csv"
    table.write_text("image_path,xmin,ymin,xmax,ymax,label\na.png,10,5,30,25,3\n", encoding="utf-16")
    assert read_csv(str(table))[0].boxes.tolist() == [[10.0, 5.0, 30.0, 25.0]]
    labels = user / "labels.csv"
    labels.write_text("index,label\n0,7\n", encoding="utf-16")
    assert read_labels_file(labels, {0: "a.png"}, DIGITS) == {0: 7}


@pytest.mark.parametrize("reader", ["coco", "csv", "keypoints", "datalist", "labels"])
def test_annotation_files_in_another_encoding_are_refused_naming_the_file(user, reader):
    """UTF-16 without a byte-order mark (NUL bytes) is named as such, with what belongs there, before any
    parser sees it (a raw UnicodeDecodeError or JSON error before)."""
    path = user / f"wide.{'csv' if reader in ('csv', 'labels') else 'json'}"
    path.write_bytes(json.dumps(COCO).encode("utf-16-le"))
    before = path.read_bytes()
    read = {"coco": lambda: read_coco(str(path)), "csv": lambda: read_csv(str(path)),
            "keypoints": lambda: read_people(str(path)), "datalist": lambda: read_datalist(path, "training"),
            "labels": lambda: read_labels_file(path, {0: "a.png"}, DIGITS)}[reader]
    with pytest.raises(ValueError) as refused:
        read()
    message = str(refused.value)
    assert str(path) in message and "NUL bytes" in message and "expected" in message
    assert {"coco": "COCO", "csv": "image_path,xmin", "keypoints": "keypoints JSON", "datalist": "datalist",
            "labels": "index,label"}[reader] in message
    assert path.read_bytes() == before
