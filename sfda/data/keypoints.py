"""Keypoint annotations: COCO keypoints JSON read into one record per person, and checked.

A COCO keypoints file holds ``images``, ``annotations`` (one per person: ``bbox`` ``[x, y, w, h]``,
``keypoints`` ``[x1, y1, v1, ...]`` with v = 0 not labelled, 1 labelled but hidden, 2 visible) and a
``person`` category with the joint names (``keypoints``), the ``skeleton`` (1-based pairs) and, as
sfda's extension, ``flip_pairs`` (left/right pairs of 0-based joint ids or of joint names; or give
``data.flip_pairs`` in the recipe). Image ids are integers or strings, as in COCO detection files.
``check_people`` refuses what would silently train on wrong data, naming the file, the annotation and
the field: a missing or non-numeric ``bbox``, a bbox entirely outside its image, a NaN or infinite
coordinate, a visibility other than 0, 1 or 2, a repeated image id, a keypoint outside its image (its
displayed size, read from the image when the file states none), a joint count that differs from the
category's (or the model's), a training person without any labelled joint, missing flip pairs when
flips are on. ``read_skeleton`` refuses empty or repeated joint names, skeleton ids outside 1..K, and
flip pairs that are not pairs of two different joints (ids 0..K-1 or joint names) each in at most one
pair.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .boxes import coco_box, coco_crowd, coco_declared_size, coco_images, coco_reference, locate
from .checks import class_name, first_duplicate, json_number, json_section, json_type
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
    image_id: int | str = -1
    category_id: int | str = 1
    labelled: bool = True  # False: the file gave no keypoints for this person (target people need none)

    @property
    def name(self) -> str:
        return f"{str(self.image).rsplit('/', 1)[-1]}#{self.person_id}"


def person_category(payload: dict, where: str) -> dict:
    """The one category with joint names (``keypoints``), with an ``id``; every category an object."""
    categories = json_section(payload, "categories", where, KEYPOINTS_SHAPE)
    for number, category in enumerate(categories):
        if not isinstance(category, dict):
            raise ValueError(
                f"{where}: categories[{number}] = {category!r} (a {json_type(category)}); expected an object "
                "{id, name, keypoints: [joint names], skeleton}"
            )
    people = [c for c in categories if c.get("keypoints")]
    if len(people) != 1:
        raise ValueError(
            f"{where}: categories: expected one category with 'keypoints' (joint names), found {len(people)}"
        )
    if "id" not in people[0]:
        raise ValueError(f"{where}: the category with 'keypoints': field 'id' is missing; expected its id")
    return people[0]


def joint_names(category: dict, where: str) -> list[str]:
    """The category's ``keypoints``: a list of distinct, non-empty joint names."""
    names = category["keypoints"]
    if not isinstance(names, list):
        raise ValueError(f"{where}: field 'keypoints' = {names!r}; expected a list of joint names")
    names = [class_name(name, f"{where}: keypoints[{i}]") for i, name in enumerate(names)]
    twice = first_duplicate(names)
    if twice is not None:
        raise ValueError(
            f"{where}: keypoints[{twice[1]}] = '{names[twice[1]]}' repeats keypoints[{twice[0]}]; expected "
            "distinct joint names (flip pairs, heatmaps and results tell joints apart by them)"
        )
    return names


def joint_index(joint: object, names: list[str], base: int, where: str, expected: str) -> int:
    """The 0-based index of ``joint``: a joint name, or an id counted from ``base``."""
    if isinstance(joint, str) and joint in names:
        return names.index(joint)
    if isinstance(joint, int) and not isinstance(joint, bool) and base <= joint < len(names) + base:
        return joint - base
    raise ValueError(f"{where}: {joint!r} is not a joint of {names}; {expected}")


def joint_pairs(pairs: object, names: list[str], base: int, where: str) -> list[tuple[int, int]]:
    """0-based pairs of two different joints, each written as a joint name or an id counted from ``base``
    (COCO skeletons count from 1, flip pairs from 0)."""
    counted = "COCO skeletons count joints from 1" if base else "counted from 0"
    expected = (f"expected pairs of two different joints, each a joint name or an id in "
                f"{base}..{len(names) - 1 + base} ({counted})")
    if not isinstance(pairs, (list, tuple)):
        raise ValueError(f"{where} = {pairs!r}; {expected}")
    found = []
    for number, pair in enumerate(pairs):
        place = f"{where}[{number}] = {list(pair) if isinstance(pair, tuple) else pair!r}"
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"{place}; {expected}")
        a, b = (joint_index(joint, names, base, place, expected) for joint in pair)
        if a == b:
            raise ValueError(f"{place}: one joint twice; {expected}")
        found.append((a, b))
    return found


def flip_pairs_of(pairs: object, names: list[str], where: str) -> list[tuple[int, int]]:
    """Left/right pairs (0-based ids or joint names) as 0-based ids; each joint in at most one pair, so
    that a flip is a permutation of the joints."""
    found = joint_pairs(pairs, names, 0, where)
    seen: dict[int, int] = {}
    for number, pair in enumerate(found):
        for joint in pair:
            if joint in seen:
                raise ValueError(
                    f"{where}[{number}]: joint '{names[joint]}' is also in pair {seen[joint]} "
                    f"{list(found[seen[joint]])}; "
                    "expected each joint in at most one pair (a flip swaps a left joint with its right one)"
                )
            seen[joint] = number
    return found


def keypoints_payload(location: str) -> dict:
    """The parsed JSON of a COCO keypoints file, refused naming the file when it is not JSON text."""
    try:
        payload = json.loads(text_of(Path(resolve(location)), "annotation file", KEYPOINTS_SHAPE))
    except json.JSONDecodeError as err:
        raise ValueError(f"{location}: not readable JSON ({err}); expected {KEYPOINTS_SHAPE}") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{location}: holds a JSON {type(payload).__name__}; expected {KEYPOINTS_SHAPE}")
    return payload


def read_skeleton(location: str, flip_pairs: list[tuple[int | str, int | str]] | None = None) -> Skeleton:
    """The joint names, skeleton and flip pairs of a COCO keypoints file (``flip_pairs``, joint ids or
    names, overrides)."""
    category = person_category(keypoints_payload(location), str(location))
    place = f"{location}: category {category['id']!r}"
    names = joint_names(category, place)
    edges = joint_pairs(category.get("skeleton", []), names, 1, f"{place}: skeleton")
    if flip_pairs is not None:
        pairs = flip_pairs_of(flip_pairs, names, f"data.flip_pairs (joints of {location})")
    else:
        pairs = flip_pairs_of(category.get("flip_pairs", []), names, f"{place}: flip_pairs")
    return Skeleton(names=names, edges=edges, flip_pairs=pairs)


KEYPOINTS_SHAPE = (
    "a COCO keypoints JSON: 'images' [{id, file_name}], 'annotations' (one per person: image_id, "
    "category_id, bbox, keypoints) and 'categories' (one with the joint names in 'keypoints')"
)
VISIBILITY = (0, 1, 2)  # COCO: not labelled, labelled but hidden, visible


def person_keypoints(annotation: dict, names: list[str], where: str) -> np.ndarray:
    """``(K, 3)`` ``x, y, v`` of a person: ``3 K`` finite numbers, each v one of 0, 1, 2."""
    values = annotation.get("keypoints")
    if values is None:
        raise ValueError(
            f"{where}: no 'keypoints' field; expected {3 * len(names)} numbers (x, y, v for each of the "
            f"category's {len(names)} joints). Only target people, whose labels never train, may omit it"
        )
    if isinstance(values, list) and values and all(isinstance(v, (list, dict)) for v in values):
        raise ValueError(
            f"{where}: keypoints is a list of {len(values)} {json_type(values[0])}s (e.g. {values[0]!r}); "
            f"expected one flat list of numbers x1, y1, v1, x2, y2, v2, ... ({3 * len(names)} numbers for "
            f"the category's {len(names)} joints, as COCO writes them)"
        )
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


def read_people(
    location: str, image_root: str | None = None, keypoints_optional: bool = False
) -> list[PersonRecord]:
    """Every person of a COCO keypoints file (crowd annotations skipped), in annotation order. With
    ``keypoints_optional`` (target people: labels only ever report) a person without a ``keypoints`` field
    is read as unlabelled (every v 0, ``labelled`` False)."""
    where = str(location)
    payload = keypoints_payload(location)
    for key in ("images", "annotations", "categories"):
        json_section(payload, key, where, KEYPOINTS_SHAPE)
    category = person_category(payload, where)
    names = joint_names(category, f"{where}: category {category['id']!r}")
    images = coco_images(payload, where, image_root)
    people = []
    for pid, annotation in person_annotations(payload, category, where):
        image = images[coco_reference(annotation, "image_id", images, f"{where}: annotation {pid}")]
        place = f"{where}: annotation {pid}"
        unlabelled = keypoints_optional and annotation.get("keypoints") is None
        people.append(
            PersonRecord(
                image=locate(image["file_name"], where, image_root),
                box=np.array(coco_box(annotation, place)),
                keypoints=(np.zeros((len(names), 3)) if unlabelled
                           else person_keypoints(annotation, names, place)),
                annotation=where,
                person_id=pid,
                size=coco_declared_size(image, f"{where}: images entry id {image['id']!r}") or (0, 0),
                image_id=image["id"],
                category_id=category["id"],
                labelled=not unlabelled,
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
    if model_joints is not None:
        check_joint_count(skeleton, model_joints, people[0].annotation if people else "data")
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
        check_box_inside(person)


def check_joint_count(skeleton: Skeleton, model_joints: int, where: str) -> None:
    """Refuse a keypoint set whose joint count is not the model's, naming the file and both counts."""
    if model_joints == len(skeleton.names):
        return
    names = skeleton.names
    shown = ", ".join(names[:4]) + (f", ... ({len(names) - 4} more)" if len(names) > 4 else "")
    raise ValueError(
        f"{where}: categories[].keypoints names {len(names)} joints ({shown}) but the source model predicts "
        f"{model_joints} heatmaps; a pose model adapts only to its own keypoint set: train a source model on "
        "labelled data with these joints (recipes/pose/figures/source.yaml with data.train set to your "
        "files) and adapt that one"
    )


def check_box_inside(person: PersonRecord) -> None:
    """Refuse a person whose box lies entirely outside its image (size known)."""
    width, height = person.size
    x0, y0, x1, y1 = (float(v) for v in person.box)
    if width > 0 and height > 0 and (x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height):
        raise ValueError(
            f"{person.annotation}: annotation {person.person_id} ({person.name}): bbox "
            f"[{x0:g}, {y0:g}, {x1 - x0:g}, {y1 - y0:g}] lies entirely outside its {width}x{height} image; "
            "expected a box [x, y, width, height] that overlaps the image (COCO boxes)"
        )


def image_exists(person: PersonRecord) -> Path:
    path = Path(resolve(person.image))
    if not path.is_file():
        raise FileNotFoundError(
            f"{person.annotation}: annotation {person.person_id}: image {path} does not exist"
        )
    return path
