"""Keypoint annotations: COCO keypoints JSON read into one record per person, and checked.

A COCO keypoints file holds ``images``, ``annotations`` (one per person: ``bbox`` ``[x, y, w, h]``,
``keypoints`` ``[x1, y1, v1, ...]`` with v = 0 not labelled, 1 labelled but hidden, 2 visible) and a
``person`` category with the joint names (``keypoints``), the ``skeleton`` (1-based pairs) and, as
sfda's extension, ``flip_pairs`` (0-based left/right pairs; or give ``data.flip_pairs`` in the recipe).
``check_people`` refuses what would silently train on wrong data, naming the file, the annotation and
the field: a missing or non-numeric ``bbox``, a NaN or infinite coordinate, a visibility other than 0,
1 or 2, a repeated image id, a keypoint outside its image, a joint count that differs from the
category's (or the model's), a training person without any labelled joint, missing flip pairs when
flips are on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .boxes import coco_box, coco_crowd, coco_images, coco_reference, locate
from .checks import json_number, json_section
from .fetch import resolve
from .text_files import text_of


@dataclass
class Skeleton:
    """The joints of a keypoint set: ``names`` (K), 0-based ``edges`` to draw and ``flip_pairs``."""

    names: list[str]
    edges: list[tuple[int, int]]
    flip_pairs: list[tuple[int, int]]

    def flip_order(self) -> np.ndarray:
        """``(K,)`` the joint order after a horizontal flip (each pair swapped)."""
        order = np.arange(len(self.names))
        for a, b in self.flip_pairs:
            order[a], order[b] = b, a
        return order


@dataclass
class PersonRecord:
    """One person: its image, box ``(4,)`` xyxy pixels, keypoints ``(K, 3)`` ``x, y, v`` in image pixels,
    the image size ``(width, height)``, and where it came from (file, annotation id) for messages."""

    image: str
    box: np.ndarray
    keypoints: np.ndarray
    size: tuple[int, int]
    annotation: str
    person_id: int
    image_id: int = -1

    @property
    def name(self) -> str:
        return f"{str(self.image).rsplit('/', 1)[-1]}#{self.person_id}"


def person_category(payload: dict, where: str) -> dict:
    people = [c for c in payload.get("categories", []) if c.get("keypoints")]
    if len(people) != 1:
        raise ValueError(
            f"{where}: categories: expected one category with 'keypoints' (joint names), found {len(people)}"
        )
    return people[0]


def keypoints_payload(location: str) -> dict:
    """The parsed JSON of a COCO keypoints file, refused naming the file when it is not JSON text."""
    try:
        payload = json.loads(text_of(Path(resolve(location)), "annotation file", KEYPOINTS_SHAPE))
    except json.JSONDecodeError as err:
        raise ValueError(f"{location}: not readable JSON ({err}); expected {KEYPOINTS_SHAPE}") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{location}: holds a JSON {type(payload).__name__}; expected {KEYPOINTS_SHAPE}")
    return payload


def read_skeleton(location: str, flip_pairs: list[tuple[int, int]] | None = None) -> Skeleton:
    """The joint names, skeleton and flip pairs of a COCO keypoints file (``flip_pairs`` overrides)."""
    where = str(location)
    category = person_category(keypoints_payload(location), where)
    names = [str(n) for n in category["keypoints"]]
    edges = [(int(a) - 1, int(b) - 1) for a, b in category.get("skeleton", [])]
    pairs = flip_pairs if flip_pairs is not None else category.get("flip_pairs", [])
    pairs = [(int(a), int(b)) for a, b in pairs]
    bad = [p for p in pairs if not (0 <= p[0] < len(names) and 0 <= p[1] < len(names)) or p[0] == p[1]]
    if bad:
        raise ValueError(
            f"{where}: flip_pairs {bad}: expected pairs of two different joint ids in 0..{len(names) - 1}"
        )
    return Skeleton(names=names, edges=edges, flip_pairs=pairs)


KEYPOINTS_SHAPE = (
    "a COCO keypoints JSON: 'images' [{id, file_name}], 'annotations' (one per person: image_id, "
    "category_id, bbox, keypoints) and 'categories' (one with the joint names in 'keypoints')"
)
VISIBILITY = (0, 1, 2)  # COCO: not labelled, labelled but hidden, visible


def person_keypoints(annotation: dict, names: list[str], where: str) -> np.ndarray:
    """``(K, 3)`` ``x, y, v`` of a person: ``3 K`` finite numbers, each v one of 0, 1, 2."""
    values = annotation.get("keypoints")
    if not isinstance(values, list) or len(values) != 3 * len(names):
        count = len(values) if isinstance(values, list) else 0
        raise ValueError(
            f"{where}: keypoints holds {count // 3} joints ({count} numbers); the category names "
            f"{len(names)} (expected {3 * len(names)} numbers: x, y, v per joint)"
        )
    axes = ("x", "y", "v")
    numbers = [
        json_number(v, f"{where}: keypoints[{i}] (joint '{names[i // 3]}', {axes[i % 3]})")
        for i, v in enumerate(values)
    ]
    points = np.array(numbers, dtype=np.float64).reshape(len(names), 3)
    bad = np.flatnonzero(~np.isin(points[:, 2], VISIBILITY))
    if bad.size:
        k = int(bad[0])
        raise ValueError(
            f"{where}: keypoints[{3 * k + 2}] (joint '{names[k]}', v) = {points[k, 2]:g}; expected a COCO "
            "visibility 0 (not labelled), 1 (labelled, hidden) or 2 (visible)"
        )
    return points


def annotation_id(annotation: object, number: int, seen: dict[int, int], where: str) -> int:
    """The integer ``id`` of ``annotations[number]`` (its position when absent), unique in ``seen``."""
    if not isinstance(annotation, dict):
        raise ValueError(f"{where}: annotations[{number}] = {annotation!r}; expected an object (one person)")
    pid = annotation.get("id", number)
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise ValueError(f"{where}: annotations[{number}].id = {pid!r}; expected an integer id")
    if pid in seen:
        raise ValueError(
            f"{where}: annotations[{number}].id = {pid} repeats annotations[{seen[pid]}].id; expected "
            "unique annotation ids (each person's predictions are written under its id)"
        )
    seen[pid] = number
    return pid


def person_annotations(payload: dict, category: dict, where: str) -> list[tuple[int, dict]]:
    """``(person id, annotation)`` of the file's people: annotations of the keypoint category that are
    not crowds. Refuses an entry that is not an object, a repeated or non-integer ``id``, an unknown
    ``category_id`` and an ``iscrowd`` other than 0 or 1."""
    known = [c.get("id") for c in payload["categories"] if isinstance(c, dict)]
    people, seen = [], {}
    for number, annotation in enumerate(payload["annotations"]):
        pid = annotation_id(annotation, number, seen, where)
        category_id = coco_reference(annotation, "category_id", known, f"{where}: annotation {pid}")
        if not coco_crowd(annotation, f"{where}: annotation {pid}") and category_id == category["id"]:
            people.append((pid, annotation))
    return people


def read_people(location: str, image_root: str | None = None) -> list[PersonRecord]:
    """Every person of a COCO keypoints file (crowd annotations skipped), in annotation order."""
    where = str(location)
    payload = keypoints_payload(location)
    for key in ("images", "annotations", "categories"):
        json_section(payload, key, where, KEYPOINTS_SHAPE)
    category = person_category(payload, where)
    names = [str(n) for n in category["keypoints"]]
    images = coco_images(payload, where)
    people = []
    for pid, annotation in person_annotations(payload, category, where):
        image = images[coco_reference(annotation, "image_id", images, f"{where}: annotation {pid}")]
        place = f"{where}: annotation {pid}"
        people.append(
            PersonRecord(
                image=locate(image["file_name"], where, image_root),
                box=np.array(coco_box(annotation, place)),
                keypoints=person_keypoints(annotation, names, place),
                annotation=where,
                person_id=pid,
                size=(int(image.get("width", 0)), int(image.get("height", 0))),
                image_id=int(image["id"]),
            )
        )
    return people


def check_people(
    people: list[PersonRecord],
    skeleton: Skeleton,
    training: bool,
    flip: bool,
    model_joints: int | None = None,
) -> None:
    """Refuse people whose keypoints would train or score on wrong data (see the module docstring)."""
    if model_joints is not None and model_joints != len(skeleton.names):
        where = people[0].annotation if people else "data"
        raise ValueError(
            f"{where}: {len(skeleton.names)} joints {skeleton.names} but the model predicts "
            f"{model_joints} heatmaps; use a model trained on this keypoint set"
        )
    if flip and not skeleton.flip_pairs:
        where = people[0].annotation if people else "data"
        raise ValueError(
            f"{where}: categories[].flip_pairs: horizontal flips are on but no flip pairs are given "
            "(left/right joint ids, e.g. [[0, 5], [1, 4]]); add them to the category or give "
            "data.flip_pairs, or set data.augment.flip: false"
        )
    for person in people:
        labelled = person.keypoints[:, 2] > 0
        width, height = person.size
        outside = labelled & (
            (person.keypoints[:, 0] < 0)
            | (person.keypoints[:, 1] < 0)
            | (width > 0) & (person.keypoints[:, 0] >= width)
            | (height > 0) & (person.keypoints[:, 1] >= height)
        )
        if outside.any():
            k = int(np.flatnonzero(outside)[0])
            raise ValueError(
                f"{person.annotation}: annotation {person.person_id} ({person.name}): keypoint "
                f"'{skeleton.names[k]}' at ({person.keypoints[k, 0]:g}, {person.keypoints[k, 1]:g}) "
                f"lies outside its {width}x{height} image; expected 0 <= x < {width}, 0 <= y < {height}"
            )
        if training and not labelled.any():
            raise ValueError(
                f"{person.annotation}: annotation {person.person_id} ({person.name}): no labelled "
                "joint (every v is 0); a person used for training needs at least one"
            )
        if not (person.box[2] > person.box[0] and person.box[3] > person.box[1]):
            raise ValueError(
                f"{person.annotation}: annotation {person.person_id} ({person.name}): bbox "
                f"{person.box.tolist()} is empty; expected [x, y, w, h] with w, h > 0"
            )


def image_exists(person: PersonRecord) -> Path:
    path = Path(resolve(person.image))
    if not path.is_file():
        raise FileNotFoundError(
            f"{person.annotation}: annotation {person.person_id}: image {path} does not exist"
        )
    return path
