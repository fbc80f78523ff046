"""Box annotations: Pascal VOC XML, COCO JSON and CSV files read into one record per image, and checked.

Every reader returns ``BoxRecord`` rows (one per image; an image may have no boxes). Boxes are
``(N, 4) float32`` ``xmin, ymin, xmax, ymax`` in pixels of the full image; labels are class names.
``check_records`` refuses what would silently train on wrong data, naming the annotation file, the
image and the field: a box with ``xmax <= xmin`` (or ``ymax <= ymin``), a box outside its image, a
label not among the class names, an empty class name, an image that does not exist, an image whose size
differs from the one its annotation file declares (COCO ``width``/``height``, VOC ``<size>``: whole
numbers of pixels, compared with the displayed image; 0 or absent means unknown). A VOC ``<difficult>``
other than 0 or 1 is refused.

COCO: ``read_coco`` refuses a file that is not a COCO detection JSON (missing ``images``,
``annotations`` or ``categories``), repeated image or category ids, one image listed twice (file names
compared as resolved paths: ``p.jpg`` and ``./p.jpg`` are one image) or a class name listed twice, a
category name that is not a non-empty string, an ``image_id`` or ``category_id`` that is not an integer or
string id (a boolean, a list) or names an unknown image or category, an ``iscrowd`` other than 0 or 1,
``bbox`` values that are not finite numbers, and a width (``bbox[2]``) or height (``bbox[3]``) that is
not positive; messages quote the box as written and say COCO boxes are ``[x, y, width, height]``
(with the corrected values when a box looks written as ``[x1, y1, x2, y2]``). ``iscrowd: 1`` regions
and VOC ``difficult`` boxes are kept as ignored boxes: never training targets, and ignored by the
VOC AP and the COCO mAP.

CSV: a header ``image_path,xmin,ymin,xmax,ymax,label`` (DeepForest's); image paths relative to the
CSV's folder; a row whose box fields are empty marks an image without boxes.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .checks import class_name, first_duplicate, json_id, json_number, json_pixels, json_section, json_type
from .fetch import resolve
from .image_files import displayed_size
from .text_files import text_of

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
        difficult: ``(N,) bool`` VOC "difficult" flags.
        crowd: ``(N,) bool`` COCO ``iscrowd`` flags.
        written: per box, where it is in the file and its values as written there (for messages).
        declared: ``(width, height)`` the annotation file declares for the image, if any.

    Difficult and crowd boxes are ``ignored``: never training targets, and evaluation neither rewards
    nor penalises a detection on them (as the VOC and COCO evaluations do).
    """

    image: str
    boxes: np.ndarray
    labels: list[str]
    annotation: str
    window: tuple[int, int, int, int] | None = None
    difficult: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    crowd: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    written: list[str] = field(default_factory=list)
    declared: tuple[int, int] | None = None

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        if len(self.difficult) != len(self.boxes):
            self.difficult = np.zeros(len(self.boxes), dtype=bool)
        if len(self.crowd) != len(self.boxes):
            self.crowd = np.zeros(len(self.boxes), dtype=bool)

    @property
    def ignored(self) -> np.ndarray:
        """``(N,) bool``: boxes that are neither trained on nor scored (VOC difficult, COCO crowd)."""
        return np.asarray(self.difficult, dtype=bool) | np.asarray(self.crowd, dtype=bool)

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
        labels.append(class_name((obj.findtext("name") or "").strip(), f"{where}, field 'name'"))
        difficult.append(voc_difficult(obj.findtext("difficult"), where))
    return [
        BoxRecord(
            image,
            np.array(boxes),
            labels,
            str(location),
            difficult=np.array(difficult, dtype=bool),
            declared=voc_declared_size(root, str(location)),
        )
    ]


def voc_difficult(text: str | None, where: str) -> bool:
    """A VOC object's ``<difficult>``: 0 or 1 (absent or empty is 0); anything else is refused."""
    value = (text or "0").strip() or "0"
    if value not in ("0", "1"):
        raise ValueError(f"{where}, field 'difficult' = {value!r}; expected 0 or 1")
    return value == "1"


def voc_declared_size(root: ET.Element, location: str) -> tuple[int, int] | None:
    """``(width, height)`` a VOC file's ``<size>`` declares, or None when it declares none (or 0, unknown)."""
    size = root.find("size")
    texts = {k: (size.findtext(k) or "").strip() if size is not None else "" for k in ("width", "height")}
    if all(text in ("", "0") for text in texts.values()):
        return None
    return tuple(
        json_pixels(_number(text, f"{location}: field size/{k}"), f"{location}: field size/{k}")
        for k, text in texts.items()
    )


COCO_SHAPE = (
    "a COCO detection JSON: 'images' [{id, file_name}], 'annotations' [{image_id, category_id, "
    "bbox: [x, y, width, height]}] and 'categories' [{id, name}]"
)


def id_order(value: int | str) -> tuple[bool, int | str]:
    """Sort key of COCO ids: integers in numeric order, then strings."""
    return isinstance(value, str), value


def coco_payload(location: str) -> dict:
    """The parsed JSON of a COCO file, refused by name when it is not JSON or not an object."""
    try:
        data = json.loads(text_of(Path(resolve(location)), "annotation file", COCO_SHAPE))
    except json.JSONDecodeError as err:
        raise ValueError(f"{location}: not readable JSON ({err}); expected {COCO_SHAPE}") from err
    for key in ("images", "annotations", "categories"):
        json_section(data, key, str(location), COCO_SHAPE)
    return data


def coco_fields(data: dict, section: str, fields: tuple[str, ...], where: str) -> list[dict]:
    """The entries of ``data[section]``, each an object with ``fields``."""
    for number, entry in enumerate(data[section]):
        missing = [f for f in fields if not isinstance(entry, dict) or f not in entry]
        if missing:
            raise ValueError(
                f"{where}: {section}[{number}]: field '{missing[0]}' is missing; expected {COCO_SHAPE}"
            )
    return data[section]


def coco_entries(data: dict, section: str, fields: tuple[str, ...], where: str) -> list[dict]:
    """The entries of ``data[section]``, each an object with ``fields``, their ``id`` unique."""
    entries = coco_fields(data, section, fields, where)
    for number, entry in enumerate(entries):
        if isinstance(entry["id"], bool) or not isinstance(entry["id"], (int, str)):
            raise ValueError(
                f"{where}: {section}[{number}].id = {entry['id']!r}: expected an integer id"
            )
    twice = first_duplicate([entry["id"] for entry in entries])
    if twice is not None:
        first, second = twice
        raise ValueError(
            f"{where}: {section}[{second}].id = {entries[second]['id']!r} repeats {section}[{first}].id; "
            f"expected every id in '{section}' to be unique (their annotations would be mixed up)"
        )
    return entries


def coco_categories(data: dict, where: str) -> dict:
    """``{category id: name}``; names must be distinct strings (the file's type is named otherwise)."""
    categories = coco_entries(data, "categories", ("id", "name"), where)
    for number, category in enumerate(categories):
        name = category["name"]
        if not isinstance(name, str):
            raise ValueError(
                f"{where}: categories[{number}].name = {name!r} is a {json_type(name)}; "
                f'expected a string (class names are text): write "{name}"'
            )
        class_name(name, f"{where}: categories[{number}].name")
    twice = first_duplicate([c["name"] for c in categories])
    if twice is not None:
        raise ValueError(
            f"{where}: categories[{twice[1]}].name = '{categories[twice[1]]['name']}' repeats "
            f"categories[{twice[0]}]; expected distinct names (two ids would merge into one class)"
        )
    return {c["id"]: c["name"] for c in categories}


def image_key(name: str, location: str, image_root: str | None) -> str:
    """Where image ``name`` of ``location`` is, resolved (``./p.jpg``, ``p.jpg`` and a link to it are one)."""
    place = locate(name, location, image_root)
    return posixpath.normpath(place) if "://" in place else str(Path(place).resolve())


def coco_images(data: dict, where: str, image_root: str | None = None) -> dict:
    """``{image id: images entry}``; file names must be non-empty strings naming distinct files (one image,
    one entry; compared as resolved paths)."""
    images = coco_entries(data, "images", ("id", "file_name"), where)
    for number, image in enumerate(images):
        if not isinstance(image["file_name"], str) or not image["file_name"].strip():
            raise ValueError(
                f"{where}: images[{number}].file_name = {image['file_name']!r}; expected the image's file "
                "name (a non-empty string)"
            )
    twice = first_duplicate([image_key(im["file_name"], where, image_root) for im in images])
    if twice is not None:
        first, second = images[twice[0]], images[twice[1]]
        same = "" if first["file_name"] == second["file_name"] else f": '{first['file_name']}', the same file"
        raise ValueError(
            f"{where}: images[{twice[1]}].file_name = '{second['file_name']}' repeats "
            f"images[{twice[0]}] (id {first['id']!r}){same}; expected one entry per image"
        )
    return {im["id"]: im for im in images}


def coco_reference(ann: dict, field: str, known, where: str):
    """``ann[field]`` (``image_id`` or ``category_id``), refused unless it is one of the ``known`` ids of
    the file's images or categories."""
    value = json_id(ann.get(field), f"{where}: field '{field}'")
    if value not in known:
        section = "images" if field == "image_id" else "categories"
        raise ValueError(
            f"{where}: field '{field}' = {value!r} names no entry of '{section}'; expected one of its ids "
            f"{sorted(known, key=id_order)[:10]}{' ...' if len(known) > 10 else ''}"
        )
    return value


def coco_box(ann: dict, where: str) -> list[float]:
    """``bbox = [x, y, width, height]`` of an annotation as ``[x1, y1, x2, y2]``, with width, height > 0."""
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise ValueError(f"{where}: field 'bbox' = {bbox!r}; expected [x, y, width, height] (COCO boxes)")
    x, y, w, h = (json_number(v, f"{where}: bbox[{i}]") for i, v in enumerate(bbox))
    for index, name, value in ((2, "width", w), (3, "height", h)):
        if value <= 0:
            raise ValueError(
                f"{where}: bbox {bbox}: {name} (bbox[{index}]) = {value:g}; expected > 0 "
                "(COCO boxes are [x, y, width, height])"
            )
    return [x, y, x + w, y + h]


def coco_crowd(ann: dict, where: str) -> bool:
    """The annotation's ``iscrowd`` (0 or 1; absent is 0)."""
    crowd = ann.get("iscrowd", 0)
    if crowd not in (0, 1) or isinstance(crowd, (float, bool)):
        raise ValueError(f"{where}: field 'iscrowd' = {crowd!r}; expected 0 or 1")
    return bool(crowd)


def coco_declared_size(image: dict, where: str) -> tuple[int, int] | None:
    """``(width, height)`` an images entry declares, or None when it declares neither (or 0, unknown);
    each a whole number of pixels (a fractional, string or boolean size is refused, naming the field)."""
    if all(image.get(k) in (None, 0) and not isinstance(image.get(k), bool) for k in ("width", "height")):
        return None
    return tuple(json_pixels(image.get(k), f"{where}: field '{k}'") for k in ("width", "height"))


def read_coco(location: str, image_root: str | None = None) -> list[BoxRecord]:
    """A COCO detection JSON (``images``, ``annotations`` with ``bbox = [x, y, w, h]``, ``categories``).

    ``iscrowd: 1`` regions are kept as ignored boxes (not trained on; COCO evaluation ignores them)."""
    data = coco_payload(location)
    names = coco_categories(data, str(location))
    images = coco_images(data, str(location), image_root)
    per_image: dict = {i: [] for i in images}
    annotations = coco_fields(data, "annotations", ("image_id", "category_id"), str(location))
    for number, ann in enumerate(annotations):
        where = f"{location}: annotations[{number}]" + (f" (id {ann['id']!r})" if "id" in ann else "")
        image_id = coco_reference(ann, "image_id", images, where)
        label = names[coco_reference(ann, "category_id", names, where)]
        box = coco_box(ann, where)
        per_image[image_id].append((box, label, coco_crowd(ann, where), where, ann))
    return [coco_record(location, image_root, images[i], rows) for i, rows in per_image.items()]


def coco_record(location: str, image_root: str | None, image: dict, rows: list) -> BoxRecord:
    """One image's record: its boxes, labels, crowd flags and how each box is written in the file."""
    position = f"{location}: images entry id {image['id']!r}"
    return BoxRecord(
        locate(str(image["file_name"]), str(location), image_root),
        np.array([row[0] for row in rows]),
        [row[1] for row in rows],
        str(location),
        crowd=np.array([row[2] for row in rows], dtype=bool),
        written=[f"{row[3]}: bbox {row[4]['bbox']}" for row in rows],
        declared=coco_declared_size(image, position),
    )


def coco_class_names(location: str) -> list[str]:
    """Category names of a COCO JSON in category-id order."""
    data = coco_payload(location)
    names = coco_categories(data, str(location))
    return [names[i] for i in sorted(names, key=id_order)]


def read_csv(location: str, image_root: str | None = None) -> list[BoxRecord]:
    """A CSV with the header ``image_path,xmin,ymin,xmax,ymax,label``; one row per box."""
    path = resolve(location)
    expected = f"a CSV file with the header {','.join(CSV_FIELDS)}"
    with io.StringIO(text_of(Path(path), "annotation file", expected), newline="") as handle:
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
            labels.append(class_name((row["label"] or "").strip(), f"{location}: line {line}, field 'label'"))
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


def box_place(record: BoxRecord, number: int) -> str:
    """Where box ``number`` of ``record`` is, with its values as the file writes them (for messages)."""
    if record.written:
        return f"{record.written[number]} (image '{record.name}')"
    x0, y0, x1, y1 = record.boxes[number]
    return f"{record.annotation}: image '{record.name}', box {number} ({x0:g}, {y0:g}, {x1:g}, {y1:g})"


def outside_message(record: BoxRecord, number: int, width: int, height: int) -> str:
    """Why box ``number`` lies outside its ``width x height`` image, in the terms of its format."""
    where = box_place(record, number)
    if not record.written:
        return (
            f"{where}: outside the image of {width}x{height} pixels; expected "
            f"0 <= xmin < xmax <= {width} and 0 <= ymin < ymax <= {height}"
        )
    x0, y0, x1, y1 = (float(v) for v in record.boxes[number])
    w, h = x1 - x0, y1 - y0
    message = (
        f"{where}: outside the image of {width}x{height} pixels; COCO boxes are [x, y, width, height], "
        f"expected 0 <= x, 0 <= y, x + width <= {width} and y + height <= {height}"
    )
    if w >= x0 and h >= y0 and w <= width and h <= height:
        message += (
            f"; the values look like [x1, y1, x2, y2]: as COCO write [{x0:g}, {y0:g}, {w - x0:g}, {h - y0:g}]"
        )
    return message


def check_box(record: BoxRecord, number: int, width: int, height: int, class_names: list[str]) -> None:
    """Refuse box ``number`` of ``record`` when it is not finite, empty, outside the image or unknown."""
    x0, y0, x1, y1 = record.boxes[number]
    label = record.labels[number]
    where = box_place(record, number)
    if not np.isfinite([x0, y0, x1, y1]).all():
        raise ValueError(f"{where}: coordinates must be finite numbers")
    if x1 <= x0 or y1 <= y0:
        field_name = "xmax" if x1 <= x0 else "ymax"
        raise ValueError(
            f"{where}: field '{field_name}' must be greater than "
            f"'{field_name.replace('max', 'min')}' (an empty box)"
        )
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise ValueError(outside_message(record, number, width, height))
    if label not in class_names:
        found = "" if isinstance(label, str) else f" (a {type(label).__name__}; class names are strings)"
        raise ValueError(
            f"{where}: field 'label' = {label!r}{found} is not one of class_names {class_names} (rename or "
            "drop a label with data.label_map)"
        )


def check_declared_size(record: BoxRecord, width: int, height: int) -> None:
    """Refuse an image whose size in the annotation file differs from the image file's."""
    if record.declared is not None and tuple(record.declared) != (width, height):
        raise ValueError(
            f"{record.annotation}: image '{record.name}': the file declares width x height "
            f"{record.declared[0]}x{record.declared[1]} but the image is {width}x{height} pixels; "
            "expected the image the annotations were drawn on"
        )


def check_records(records: list[BoxRecord], class_names: list[str]) -> None:
    """Refuse boxes that are empty or outside their image, labels outside ``class_names``, missing images,
    and images whose size differs from the size their annotation file declares."""
    for record in records:
        width, height = image_size(record)
        check_declared_size(record, width, height)
        for number in range(len(record.boxes)):
            check_box(record, number, width, height, list(class_names))


def names_in(records: list[BoxRecord]) -> list[str]:
    """The sorted distinct labels of ``records`` (a source set's class names when none are given)."""
    return sorted({label for record in records for label in record.labels})


def relabel(records: list[BoxRecord], mapping: dict[str, str | None]) -> list[BoxRecord]:
    """``records`` with each label renamed by ``mapping`` (labels not in it kept); the boxes of a label
    mapped to None dropped (with their flags and positions in the file)."""
    out = []
    for record in records:
        names = [mapping.get(label, label) for label in record.labels]
        keep = np.array([name is not None for name in names], dtype=bool)
        out.append(replace(
            record,
            boxes=record.boxes[keep],
            labels=[name for name in names if name is not None],
            difficult=record.difficult[keep],
            crowd=record.crowd[keep],
            written=[w for w, k in zip(record.written, keep, strict=True) if k] if record.written else [],
        ))
    return out
