"""Keypoint data for heatmap pose estimation: person crops with heatmap targets, from COCO keypoints files.

An item: ``"image"`` ``(C, S, S)`` the person crop normalised by the input spec, ``"heatmaps"`` ``(K, h, h)``
Gaussian targets, ``"weight"`` ``(K,)`` 1 for a labelled joint inside the crop (the visibility flags:
v = 1 hidden joints are labelled and count, v = 0 do not), ``"keypoints"`` ``(K, 2)`` in input pixels,
``"matrix"`` ``(2, 3)`` image pixels -> input pixels, ``"index"`` the global sample index, and with
``needs_strong_view`` a ``"strong"`` augmented view with its own ``"strong_matrix"``. Target training
items carry no keypoints (zero heatmaps and weights): target labels only report.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .datasets import RGBImageCache
from .heatmaps import MIN_HEATMAP
from .heatmaps import heatmap_sigma as default_sigma
from .image_files import check_stated_size
from .keypoints import (
    PersonRecord,
    Skeleton,
    check_joint_count,
    check_people,
    image_exists,
    read_people,
    read_skeleton,
)
from .pose_views import Augment, colour_jitter, crop_matrix, heatmaps, is_mirrored, view_keypoints, warp_image
from .record_datamodule import RecordDataModule, Role
from .transforms import InputSpec

CACHE_BYTES = 256 * 2**20


class PoseDataset(Dataset):
    """Items of ``people`` (see the module docstring).

    Args:
        people: persons with keypoints in image pixels.
        skeleton: joint names and flip pairs.
        spec: the model's input spec (square size, channels, mean, std).
        heatmap_size: side of the heatmap targets.
        sigma: Gaussian sigma of the targets, in heatmap pixels.
        augment: random geometry and colour of training views (None: the plain crop).
        strong: also return an augmented ``"strong"`` view (its weak view is the plain crop).
        hide_keypoints: never return keypoints (target training data).
    """

    def __init__(
        self,
        people: list[PersonRecord],
        skeleton: Skeleton,
        spec: InputSpec,
        heatmap_size: int,
        sigma: float,
        augment: Augment | None = None,
        strong: bool = False,
        hide_keypoints: bool = False,
    ):
        self.people, self.skeleton, self.spec, self.heatmap_size = people, skeleton, spec, heatmap_size
        self.sigma = sigma
        self.augment, self.strong, self.hide_keypoints = augment, strong, hide_keypoints
        self.jitter = colour_jitter(augment.colour) if augment is not None else None
        self.flip_order = skeleton.flip_order()
        self.view = "weak" if augment is not None or strong else "test"  # seeded keys when not "test"
        self.cache = RGBImageCache(CACHE_BYTES)

    def __len__(self) -> int:
        return len(self.people)

    def load(self, index: int) -> np.ndarray:
        """The image of person ``index`` as ``H x W x 3 uint8`` (kept in a bounded cache)."""
        return self.cache.get(self.people[index].image, index)

    def normalise(self, crop: np.ndarray) -> torch.Tensor:
        pixels = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float().div_(255.0)
        if self.spec.channels == 1:
            pixels = pixels.mean(dim=0, keepdim=True)
        mean, std = torch.tensor(self.spec.mean)[:, None, None], torch.tensor(self.spec.std)[:, None, None]
        return (pixels - mean) / std

    def view_of(
        self, index: int, image: np.ndarray, matrix: np.ndarray, rng: np.random.Generator | None
    ) -> dict:
        """One view through ``matrix``: the crop (colour-jittered when ``rng``) and its targets."""
        size = self.spec.size
        crop = warp_image(image, matrix, size)
        if rng is not None and self.jitter is not None:
            self.jitter.set_random_seed(int(rng.integers(2**31)))
            crop = self.jitter(image=crop)["image"]
        person = self.people[index]
        keypoints = np.zeros_like(person.keypoints) if self.hide_keypoints else person.keypoints
        points, weight = view_keypoints(
            keypoints, matrix, size, self.flip_order if is_mirrored(matrix) else None
        )
        return {
            "image": self.normalise(crop),
            "keypoints": torch.from_numpy(points).float(),
            "weight": torch.from_numpy(weight),
            "heatmaps": torch.from_numpy(heatmaps(points, weight, size, self.heatmap_size, self.sigma)),
            "matrix": torch.from_numpy(matrix).float(),
        }

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image, box = self.load(index), self.people[index].box
        rng = np.random.default_rng(seed) if seed is not None else None
        plain = crop_matrix(box, self.spec.size)
        if self.augment is not None and rng is not None and not self.strong:
            item = self.view_of(index, image, crop_matrix(box, self.spec.size, **self.augment.draw(rng)), rng)
        else:
            item = self.view_of(index, image, plain, None)
        if self.strong and rng is not None:
            draw = (self.augment or Augment()).draw(rng)
            strong = self.view_of(index, image, crop_matrix(box, self.spec.size, **draw), rng)
            item.update({f"strong_{k}" if k != "image" else "strong": v for k, v in strong.items()})
        item.update(index=index, labelled=not self.hide_keypoints and self.people[index].labelled)
        return item


def check_image_sizes(people: list[PersonRecord]) -> None:
    """Refuse an image whose stated width and height are not its displayed size (each image once); every
    person's ``size`` becomes the displayed size, so that keypoints are checked against the image even
    when the file states no size."""
    shown = {}
    for person in people:
        if person.image not in shown:
            where = f"{person.annotation}: image id {person.image_id!r}, fields 'width' and 'height'"
            shown[person.image] = check_stated_size(image_exists(person), person.size, where)
        person.size = shown[person.image]


class PoseDataModule(RecordDataModule):
    """Person keypoints from COCO keypoints files, cropped from each person's box.

    Roles: ``source`` trains on ``train`` (labelled) and picks its checkpoint on ``val`` (default: a seeded
    10% of the training people held out). ``target`` adapts on ``train`` with every keypoint hidden and
    reports on ``eval`` (default: the training people, the transductive SFDA protocol).

    Args:
        train: COCO keypoints files of the training people (a path or a ``demo://`` URI).
        eval: files of the evaluation people (val/test/predict).
        val: source role: files of the validation people.
        role: 'source' or 'target'.
        input: the model's input spec; a target adopts the artifact's.
        heatmap_size: heatmap side (default: input size / 4, SimpleBaseline's stride); at least 8.
        heatmap_sigma: Gaussian sigma of the heatmap targets (and of Mean Teacher's pseudo-heatmaps) in
            heatmap pixels; default: the paper's 2 px at a 64-pixel heatmap scaled to the heatmap size, never
            below 1.5 px (``sfda.data.heatmaps.heatmap_sigma``), so the 0.9 gates stay reachable.
        augment: random geometry and colour of training views (``flip`` needs flip pairs).
        flip_pairs: left/right joint pairs (0-based joint ids or joint names), if the files do not carry
            ``flip_pairs``; each joint in at most one pair.
        image_root: folder of the images named by the files (default: beside each file).
        batch_size: GLOBAL training batch size; eval_batch_size: of evaluation and target passes.
        num_workers: DataLoader workers per process.
        train_subset, eval_subset: use only this many people (a fixed seeded subset), for quick runs.
    """

    def __init__(
        self,
        train: list[str],
        eval: list[str] | None = None,
        val: list[str] | None = None,
        role: Role = "target",
        input: InputSpec | None = None,
        heatmap_size: int | None = None,
        heatmap_sigma: float | None = None,
        augment: Augment | None = None,
        flip_pairs: list[tuple[int | str, int | str]] | None = None,
        image_root: str | None = None,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        train_subset: int | None = None,
        eval_subset: int | None = None,
    ):
        super().__init__(
            train,
            eval,
            val,
            role,
            batch_size,
            eval_batch_size,
            num_workers,
            train_subset,
            eval_subset,
            heatmap_size=heatmap_size,
        )
        if heatmap_size is not None and heatmap_size < MIN_HEATMAP:
            raise ValueError(f"data.heatmap_size: expected at least {MIN_HEATMAP} pixels, got {heatmap_size}")
        if heatmap_sigma is not None and not heatmap_sigma > 0:
            raise ValueError(f"data.heatmap_sigma: expected a positive sigma in heatmap pixels, got "
                             f"{heatmap_sigma}")
        self.input_spec, self.heatmap_size_given = input, heatmap_size
        self.heatmap_sigma_given = heatmap_sigma
        self.augment = augment if augment is not None else Augment()
        self.flip_pairs, self.image_root = flip_pairs, image_root
        self.skeleton: Skeleton | None = None

    @property
    def heatmap_size(self) -> int:
        size = self.heatmap_size_given or self.input_spec.size // 4
        if size < MIN_HEATMAP:
            raise ValueError(f"data.heatmap_size: input size {self.input_spec.size} / 4 gives {size}-pixel "
                             f"heatmaps; expected at least {MIN_HEATMAP} (a larger input.size or "
                             "heatmap_size)")
        return size

    @property
    def heatmap_sigma(self) -> float:
        """Sigma of the heatmap targets, in heatmap pixels."""
        return self.heatmap_sigma_given or default_sigma(self.heatmap_size)

    @property
    def joint_names(self) -> list[str]:
        self.setup()
        return list(self.skeleton.names)

    @property
    def class_names(self) -> list[str]:
        """The joint names: what the data contract calls the names of the model's outputs."""
        return self.joint_names

    def _read(self, split: str) -> list[PersonRecord]:
        people = []
        for location in self.locations[split]:
            skeleton = read_skeleton(location, self.flip_pairs)
            if skeleton.names != self.skeleton.names:
                raise ValueError(
                    f"{location}: joints {skeleton.names} differ from {self.locations['train'][0]}'s "
                    f"{self.skeleton.names}; every file of a run needs the same keypoint set"
                )
            found = read_people(location, self.image_root, keypoints_optional=self.role == "target")
            check_image_sizes(found)
            # flip pairs are checked where flipped views are made (``dataset``): ``sfda test`` needs none
            training = split == "train" and self.role == "source"
            check_people(found, self.skeleton, training=training, flip=False)
            people += found
        return people

    def setup(self, stage: str | None = None) -> None:
        """Read and check the files once (idempotent)."""
        if self.splits:
            return
        self.skeleton = read_skeleton(self.locations["train"][0], self.flip_pairs)
        train, evaluation, val = self._read("train"), self._read("eval"), self._read("val")
        self.split_records(train, evaluation, val)

    def check_model_joints(self, joints: int) -> None:
        """Refuse a model whose heatmap count differs from this keypoint set's, naming the file and both."""
        self.setup()
        check_joint_count(self.skeleton, joints, str(self.locations["train"][0]))

    def dataset(self, split: str, train: bool = False, strong: bool = False) -> PoseDataset:
        records, hide = self.records_for(split)
        if (train or strong) and self.augment.flip:  # flipped views swap left and right: they need the pairs
            check_people(records[:1], self.skeleton, training=False, flip=True)
        return PoseDataset(
            records,
            self.skeleton,
            self.input_spec,
            self.heatmap_size,
            self.heatmap_sigma,
            self.augment if train else None,
            strong,
            hide,
        )
