"""Box datasets for detection: one item per image or tile, with weak and strong views of one geometry.

An item is ``{"image": (3, S, S) float [0, 1], "boxes": (n, 4) float xyxy in input pixels,
"labels": (n,) int class ids (0-based, in class_names order), "ignored": (n,) int, 1 for a box that
evaluation ignores (VOC difficult, COCO crowd; training items never carry these), "index": global
sample index,
"window": (4,) the crop in the original image, "scale": (2,) original pixels per input pixel (x, y),
"labelled": bool}``, plus ``"strong"`` when the method asks for the strong view. Target training
items never carry their boxes (``labelled`` False, no boxes): labels are for reporting only. Where the
target set has boxes, such an item carries them, in the weak view's pixels, under ``"report_boxes"``
(no ignored box) for reporting only: ``TaskModule.on_train_batch_start`` takes them out of the batch
before ``training_step``, and only ``TaskModule.reporting_references`` gives them to the pseudo-label
diagnostics (``train/hpl_precision``, ``train/lpl_precision``), which never train.
``collate_boxes`` keeps the variable-length fields as lists.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .box_views import apply_views, geometry, photometric, seed_views
from .boxes import (
    BoxRecord,
    check_records,
    coco_class_names,
    image_size,
    names_in,
    read_annotations,
    relabel,
)
from .checks import class_name, json_type
from .datasets import RGBImageCache
from .fetch import resolve
from .image_files import DEFAULT_LIMIT, IMAGE_SUFFIXES, PixelLimit, images_in
from .record_datamodule import RecordDataModule, Role
from .tiles import tile_record
from .transforms import InputSpec

CACHE_BYTES = 1 << 30  # decoded images kept in memory per process (large aerial images are read once)


def image_folder_records(folder: Path) -> list[BoxRecord]:
    """Unlabelled records for every image in ``folder`` (no annotation file: a target set's extra images)."""
    files, _ = images_in(folder, "data: image folder")
    if not files:
        raise ValueError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
    return [BoxRecord(str(f), np.zeros((0, 4)), [], str(folder)) for f in files]


def check_label_map(mapping: object) -> dict[str, str | None]:
    """``data.label_map`` ``{annotation label: class name or None}`` (None drops the label's boxes), or
    ``ValueError`` naming the entry that is not a name."""
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise ValueError(
            f"data.label_map: expected a mapping {{annotation label: class name or null}}, e.g. "
            f"{{Dead: tree, Alive: tree}}, got {mapping!r} (a {json_type(mapping)})"
        )
    for key, value in mapping.items():
        class_name(key, "data.label_map: a key")
        if value is not None:
            class_name(value, f"data.label_map.{key}")
    return dict(mapping)


def read_locations(locations: list[str], image_root: str | None) -> list[BoxRecord]:
    """Records of annotation files (VOC, COCO, CSV) and image folders, in the order given."""
    records = []
    for location in locations:
        local = Path(str(location)).expanduser()
        records += (
            image_folder_records(local) if local.is_dir() else read_annotations(str(location), image_root)
        )
    return records


class DetectionDataset(Dataset):
    """Items of ``records`` (see the module docstring).

    Args:
        records: images or tiles with boxes in crop coordinates.
        class_names: label names; an item's label is the position of its name.
        size: the square input size of the model.
        train: draw a random horizontal flip (a seeded key ``(index, seed)`` picks it).
        strong: also return the photometric strong view of the same geometry.
        hide_boxes: never return boxes (target training data).
        pixels: the most pixels an image may have (larger ones are refused, naming the file).
    """

    def __init__(
        self,
        records: list[BoxRecord],
        class_names: list[str],
        size: int,
        train: bool = False,
        strong: bool = False,
        hide_boxes: bool = False,
        pixels: PixelLimit = DEFAULT_LIMIT,
    ):
        self.records, self.size, self.hide_boxes = records, size, hide_boxes
        # records of image folders (``image_folder_records``) hold no annotation, only no box
        self.folders = {a for a in {r.annotation for r in records} if hide_boxes and Path(a).is_dir()}
        self.class_ids = {name: i for i, name in enumerate(class_names)}
        self.weak = geometry(size, flip=train)
        self.strong = photometric() if strong else None
        self.train = train
        self.view = "weak" if train else "test"  # read by the batch sampler: seeded keys when not "test"
        self.cache = RGBImageCache(CACHE_BYTES, pixels)

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> np.ndarray:
        """The full image of record ``index`` as ``HxWx3 uint8`` (kept in a bounded cache)."""
        return self.cache.get(self.records[index].image, index)

    def kept(self, record: BoxRecord) -> np.ndarray:
        """``(N,) bool``: the boxes of ``record`` that go through the views (no ignored box in training, so
        difficult and crowd regions are never training targets; hidden ones become ``report_boxes``)."""
        return ~record.ignored if self.train or self.hide_boxes else np.ones(len(record.boxes), dtype=bool)

    def targets(self, record: BoxRecord) -> tuple[np.ndarray, np.ndarray]:
        """``boxes (n, 4)`` and ``labels (n,)`` class ids of the boxes that go through the views."""
        keep = self.kept(record)
        labels = [self.class_ids[n] for n, k in zip(record.labels, keep, strict=True) if k]
        return record.boxes[keep], np.array(labels, dtype=np.int64)

    def ignored(self, record: BoxRecord) -> np.ndarray:
        """``(n,) bool`` ignored flags of the boxes that go through the views (for evaluation)."""
        return record.ignored[self.kept(record)]

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, None)
        record = self.records[index]
        image = self.load(index)
        height, width = image.shape[:2]
        x0, y0, x1, y1 = record.window or (0, 0, width, height)
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        if seed is not None:
            seed_views(self.weak, seed)
            if self.strong is not None:
                seed_views(self.strong, seed + 1)
        item = apply_views(crop, *self.targets(record), self.weak, self.strong, self.ignored(record))
        if self.hide_boxes:  # reporting only, never training (see the module docstring)
            report = item.pop("boxes")
            item.update(boxes=report[:0], labels=item["labels"][:0], ignored=item["ignored"][:0])
            if record.annotation not in self.folders:  # an image folder's images have no references
                item["report_boxes"] = report
        item.update(
            index=index,
            labelled=not self.hide_boxes,
            window=torch.tensor([x0, y0, x1, y1], dtype=torch.float32),
            scale=torch.tensor([(x1 - x0) / self.size, (y1 - y0) / self.size], dtype=torch.float32),
        )
        return item


def collate_boxes(items: list[dict]) -> dict:
    """Stack the fixed-size fields; keep ``boxes`` and ``labels`` as lists of per-image tensors."""
    out = {
        "boxes": [it["boxes"] for it in items],
        "labels": [it["labels"] for it in items],
        "ignored": [it["ignored"] for it in items],
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        "labelled": torch.tensor([it["labelled"] for it in items], dtype=torch.bool),
    }
    if all("report_boxes" in it for it in items):  # hidden target boxes, for reporting only
        out["report_boxes"] = [it["report_boxes"] for it in items]
    for name in ("image", "strong", "window", "scale"):
        if name in items[0]:
            out[name] = torch.stack([it[name] for it in items])
    return out


class DetectionDataModule(RecordDataModule):
    """Box datasets from Pascal VOC XML, COCO JSON or CSV files (and folders of unlabelled images).

    Roles: ``source`` trains on ``train`` (labelled) and picks its checkpoint on ``val`` (default: a
    seeded 10% of the training images or tiles held out; tiles of one image overlap by
    ``tile_overlap``, so that choice is slightly optimistic). ``target`` adapts on ``train`` with every
    box hidden and
    reports on ``eval`` (default: the same images, the transductive SFDA protocol; their labels are read
    for reporting only).

    Args:
        train: annotation files or image folders of the training set.
        eval: annotation files of the evaluation set (val/test/predict).
        val: source role: annotation files of the validation set.
        role: 'source' or 'target'.
        class_names: label names in model order; source default: the sorted labels found (COCO: the
            category order); a target adopts the source model's.
        input: the model's input spec (size, mean, std); a target adopts the artifact's.
        image_root: folder of the images named by the annotations (default: beside each file).
        tile_size: cut images larger than this into square tiles of this many pixels (None: never).
        tile_overlap: fraction of a tile shared with its neighbour.
        tile_min_visible: a tile keeps a box when this fraction of its area lies inside.
        max_image_pixels: the most pixels an image may have; a larger one is refused naming the file
            (default: PIL's decompression-bomb limit; raise it for genuine large aerial images).
        batch_size: GLOBAL training batch size; eval_batch_size: of evaluation and target passes.
        num_workers: DataLoader workers per process.
        train_subset, eval_subset: use only this many images (a fixed seeded subset), for quick runs.
        label_map: rename annotation labels before the class names are checked, e.g.
            ``{Dead: tree, Alive: tree}``; a label mapped to null has its boxes dropped (an evaluation-only
            label). Mapped names must be among ``class_names``; a key found in no annotation is warned of.
    """

    what = "images"
    train_expects = "annotation files or image folders"
    collate_fn = staticmethod(collate_boxes)

    def __init__(
        self,
        train: list[str],
        eval: list[str] | None = None,
        val: list[str] | None = None,
        role: Role = "target",
        class_names: list[str] | None = None,
        input: InputSpec | None = None,
        image_root: str | None = None,
        tile_size: int | None = None,
        tile_overlap: float = 0.1,
        tile_min_visible: float = 0.5,
        batch_size: int = 4,
        eval_batch_size: int = 8,
        num_workers: int = 0,
        train_subset: int | None = None,
        eval_subset: int | None = None,
        max_image_pixels: int = DEFAULT_LIMIT.pixels,
        label_map: dict[str, str | None] | None = None,
    ):
        super().__init__(train, eval, val, role, batch_size, eval_batch_size, num_workers, train_subset,
                         eval_subset, tile_size=tile_size, max_image_pixels=max_image_pixels)
        if not 0 < tile_min_visible <= 1:
            raise ValueError(f"data.tile_min_visible: expected a fraction in (0, 1], got {tile_min_visible}")
        self.input_spec, self.image_root = input, image_root
        self.tiling = (tile_size, tile_overlap, tile_min_visible)
        self.pixels = PixelLimit(max_image_pixels, "data.max_image_pixels")
        self.class_names: list[str] = list(class_names or [])
        self.label_map = check_label_map(label_map)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def adopt_class_names(self, names: list[str]) -> None:
        """A target set takes the source model's class names (its labels must be among them)."""
        if self.role == "target" and not self.class_names:
            self.class_names = list(names)

    # records ----------------------------------------------------------------------------------
    def _tiles(self, records: list[BoxRecord]) -> list[BoxRecord]:
        size, overlap, min_visible = self.tiling
        if size is None:
            return records
        return [
            tile
            for record in records
            for tile in tile_record(record, *image_size(record), size, overlap, min_visible)
        ]

    def setup(self, stage: str | None = None) -> None:
        """Read, check and tile the annotations once the class names are known (Lightning's call on a
        target set waits until the source model's names are adopted)."""
        if self.splits or (stage is not None and self.role == "target" and not self.class_names):
            return
        sets = [read_locations(self.locations[k], self.image_root) for k in ("train", "eval", "val")]
        train, evaluation, val = self.relabelled(sets)
        if not self.class_names:
            first = next((loc for loc in self.locations["train"] if str(loc).endswith(".json")), None)
            self.class_names = self.mapped(coco_class_names(first)) if first else names_in(train)
        self.check_label_map_names()
        for records in (train, evaluation, val):
            check_records(records, self.class_names)
        # a source set with no val holds out tiles (not images: a source set may be two large images)
        evaluation = self._tiles(evaluation) if evaluation else None
        self.split_records(self._tiles(train), evaluation, self._tiles(val))

    def mapped(self, names: list[str]) -> list[str]:
        """``names`` renamed by ``label_map``, dropped ones left out, each once (in first-seen order)."""
        renamed = [self.label_map.get(name, name) for name in names]
        return list(dict.fromkeys(name for name in renamed if name is not None))

    def relabelled(self, sets: list[list[BoxRecord]]) -> list[list[BoxRecord]]:
        """``sets`` of records with ``label_map`` applied; warns of keys that no annotation uses."""
        if not self.label_map:
            return sets
        found = {label for records in sets for record in records for label in record.labels}
        unused = [key for key in self.label_map if key not in found]
        if unused:
            warnings.warn(
                f"data.label_map: {unused} found in no annotation (labels read: {sorted(found)}); "
                "check the spelling (a map key is an annotation's label as written)",
                stacklevel=2,
            )
        return [relabel(records, self.label_map) for records in sets]

    def check_label_map_names(self) -> None:
        """Refuse a ``label_map`` value that is not one of the class names (the model could not learn it)."""
        for key, value in self.label_map.items():
            if value is not None and value not in self.class_names:
                raise ValueError(
                    f"data.label_map.{key} = {value!r} is not one of class_names {self.class_names}; "
                    "expected one of them, or null to drop the label's boxes"
                )

    def dataset(self, split: str, train: bool = False, strong: bool = False) -> DetectionDataset:
        records, hide = self.records_for(split)
        return DetectionDataset(
            records, self.class_names, self.input_spec.size, train, strong, hide, self.pixels
        )

    def sample_image(self, split: str, index: int) -> str:
        """Where the image of sample ``index`` of ``split`` is (local path)."""
        return str(resolve(self.splits[split][index].image))
