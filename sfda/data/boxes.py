"""Box annotations: Pascal VOC XML, COCO JSON and CSV files read into one record per image, and checked.

Every reader returns ``BoxRecord`` rows (one per image; an image may have no boxes). Boxes are
``(N, 4) float32`` ``xmin, ymin, xmax, ymax`` in pixels of the full image; labels are class names.
``check_records`` refuses what would silently train on wrong data, naming the annotation file, the
image and the field: a box with ``xmax <= xmin`` (or ``ymax <= ymin``), a box outside its image, a
label not among the class names, an image that does not exist.

CSV: a header ``image_path,xmin,ymin,xmax,ymax,label`` (DeepForest's); image paths relative to the
CSV's folder; a row whose box fields are empty marks an image without boxes.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .fetch import resolve
from .image_files import displayed_size

CSV_FIELDS = ("image_path", "xmin", "ymin", "xmax", "ymax", "label")


@dataclass
class BoxRecord:
    """One image and its boxes.

    Attributes:
        image: where the image is (a local path or a ``pypi://`` URI, resolved on reading).
        boxes: ``(N, 4) float32`` xyxy pixels of the full image.
        labels: ``N`` class names.
        annotation: the file the record came from (for messages).
        window: ``(x0, y0, x1, y1)`` crop of a tile, or None for the whole image.
        difficult: ``(N,) bool`` VOC "difficult" flags (ignored by the VOC AP, as in VOC).
    """

    image: str
    boxes: np.ndarray
    labels: list[str]
    annotation: str
    window: tuple[int, int, int, int] | None = None
    difficult: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        if len(self.difficult) != len(self.boxes):
            self.difficult = np.zeros(len(self.boxes), dtype=bool)

    @property
    def name(self) -> str:
        """A readable id: the image's file name, with the tile window when it is one."""
        base = str(self.image).rsplit("/", 1)[-1]
        return base if self.window is None else f"{base}@{self.window[0]},{self.window[1]}"


def sibling(location: str, name: str) -> str:
    """``name`` next to ``location`` (a path or a URI): where an annotation's image is."""
    if "://" in location:
        return location.rsplit("/", 1)[0] + "/" + name
    return str(Path(location).parent / name) if not location.endswith("/") else str(Path(location) / name)


def locate(name: str, annotation: str, image_root: str | None) -> str:
    """Where image ``name`` of ``annotation`` is: in ``image_root`` when given, else beside the annotation
    (for a package URI, the same package's member beside it; for a demo URI, beside the built file)."""
    if image_root is None:
        packaged = annotation.startswith(("pypi://", "deb://")) or "://" not in annotation
        return sibling(annotation if packaged else str(resolve(annotation)), name)
    return sibling(str(image_root).rstrip("/") + "/", name)


def _number(text: str | None, where: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a number, got {text!r}") from None


def read_voc(location: str, image_root: str | None = None) -> list[BoxRecord]:
    """One Pascal VOC XML file (one image); the image is ``<filename>`` in ``image_root`` or beside it."""
    path = resolve(location)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{location}: not a readable Pascal VOC XML file ({err})") from err
    filename = root.findtext("filename")
    if not filename:
        raise ValueError(f"{location}: field 'filename' is missing; expected the image's file name")
    image = locate(filename, str(location), image_root)
    boxes, labels, difficult = [], [], []
    for number, obj in enumerate(root.iter("object")):
        box = obj.find("bndbox")
        where = f"{location}: object {number} ('{obj.findtext('name')}')"
        if box is None:
            raise ValueError(f"{where}: field 'bndbox' is missing")
        boxes.append(
            [_number(box.findtext(k), f"{where}, field bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")]
        )
        labels.append((obj.findtext("name") or "").strip())
        difficult.append(obj.findtext("difficult", "0").strip() == "1")
    return [
        BoxRecord(image, np.array(boxes), labels, str(location), difficult=np.array(difficult, dtype=bool))
    ]


def read_coco(location: str, image_root: str | None = None) -> list[BoxRecord]:
    """A COCO detection JSON (``images``, ``annotations`` with ``bbox = [x, y, w, h]``, ``categories``)."""
    path = resolve(location)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
        names = {c["id"]: c["name"] for c in data["categories"]}
        images = {im["id"]: im["file_name"] for im in data["images"]}
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(
            f"{location}: not a COCO detection JSON (expected 'images', 'annotations' and "
            f"'categories' with ids and names): {err!r}"
        ) from err
    per_image: dict = {i: ([], []) for i in images}
    for number, ann in enumerate(data.get("annotations", [])):
        where = f"{location}: annotations[{number}]"
        if ann.get("image_id") not in images:
            raise ValueError(
                f"{where}: field 'image_id' = {ann.get('image_id')!r} names no entry of 'images'"
            )
        if ann.get("category_id") not in names:
            raise ValueError(
                f"{where}: field 'category_id' = {ann.get('category_id')!r} names no category; "
                f"expected one of {sorted(names)}"
            )
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise ValueError(f"{where}: field 'bbox' must be [x, y, width, height], got {bbox!r}")
        x, y, w, h = (_number(v, f"{where}, field bbox") for v in bbox)
        per_image[ann["image_id"]][0].append([x, y, x + w, y + h])
        per_image[ann["image_id"]][1].append(names[ann["category_id"]])
    return [
        BoxRecord(locate(images[i], str(location), image_root), np.array(b), lab, str(location))
        for i, (b, lab) in per_image.items()
    ]


def coco_class_names(location: str) -> list[str]:
    """Category names of a COCO JSON in category-id order."""
    data = json.loads(Path(resolve(location)).read_text(encoding="utf-8-sig"))
    return [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]


def read_csv(location: str, image_root: str | None = None) -> list[BoxRecord]:
    """A CSV with the header ``image_path,xmin,ymin,xmax,ymax,label``; one row per box."""
    path = resolve(location)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [f for f in CSV_FIELDS if f not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{location}: missing columns {missing}; expected the header {','.join(CSV_FIELDS)}"
            )
        per_image: dict[str, tuple[list, list]] = {}
        for line, row in enumerate(reader, start=2):
            boxes, labels = per_image.setdefault(row["image_path"], ([], []))
            if all(not (row[k] or "").strip() for k in CSV_FIELDS[1:5]):
                continue  # an image without boxes
            boxes.append([_number(row[k], f"{location}: line {line}, field '{k}'") for k in CSV_FIELDS[1:5]])
            labels.append(row["label"].strip())
    return [
        BoxRecord(locate(name, str(location), image_root), np.array(b), lab, str(location))
        for name, (b, lab) in per_image.items()
    ]


def read_annotations(location: str, image_root: str | None = None) -> list[BoxRecord]:
    """Records of an annotation file, its format chosen by suffix: ``.xml`` VOC, ``.json`` COCO, ``.csv``."""
    suffix = str(location).lower().rsplit(".", 1)[-1]
    readers = {"xml": read_voc, "json": read_coco, "csv": read_csv}
    if suffix not in readers:
        raise ValueError(
            f"{location}: unknown annotation format '.{suffix}'; expected a Pascal VOC .xml, a "
            "COCO .json or a .csv with image_path,xmin,ymin,xmax,ymax,label"
        )
    return readers[suffix](location, image_root)


def image_size(record: BoxRecord) -> tuple[int, int]:
    """``(width, height)`` of the image as displayed (EXIF orientation applied: boxes refer to the
    displayed image), from its header (not decoded); a missing file is named with its annotation."""
    try:
        path = resolve(record.image)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{record.annotation}: names image '{record.image}', which does not exist"
        ) from err
    return displayed_size(path, f"named by {record.annotation}")


def check_records(records: list[BoxRecord], class_names: list[str]) -> None:
    """Refuse boxes that are empty or outside their image, labels outside ``class_names``, missing images."""
    known = set(class_names)
    for record in records:
        width, height = image_size(record)
        for number, ((x0, y0, x1, y1), label) in enumerate(zip(record.boxes, record.labels, strict=True)):
            where = (
                f"{record.annotation}: image '{record.name}', box {number} ({x0:g}, {y0:g}, {x1:g}, {y1:g})"
            )
            if not np.isfinite([x0, y0, x1, y1]).all():
                raise ValueError(f"{where}: coordinates must be finite numbers")
            if x1 <= x0 or y1 <= y0:
                field_name = "xmax" if x1 <= x0 else "ymax"
                raise ValueError(
                    f"{where}: field '{field_name}' must be greater than "
                    f"'{field_name.replace('max', 'min')}' (an empty box)"
                )
            if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                raise ValueError(
                    f"{where}: outside the image of {width}x{height} pixels; expected "
                    f"0 <= xmin < xmax <= {width} and 0 <= ymin < ymax <= {height}"
                )
            if label not in known:
                raise ValueError(
                    f"{where}: field 'label' = '{label}' is not one of class_names {class_names}"
                )


def names_in(records: list[BoxRecord]) -> list[str]:
    """The sorted distinct labels of ``records`` (a source set's class names when none are given)."""
    return sorted({label for record in records for label in record.labels})
