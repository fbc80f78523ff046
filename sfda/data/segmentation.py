"""Segmentation data: 2-D slices or 3-D patches for training, whole volumes for evaluation.

Roles as for classification: a ``source`` datamodule gives labelled training samples; a
``target`` datamodule hides the labels of its training samples (adaptation never sees them)
and keeps them on the evaluation volumes for reporting only.
"""

from __future__ import annotations

import os
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .checks import check_counts
from .samplers import global_batch_loader
from .transforms import A
from .volumes import DatalistError, Volume, VolumeSpec, load_volume, read_datalist

UNLABELLED = -1


def pad_in_plane(tensor: torch.Tensor, spec: VolumeSpec) -> torch.Tensor:
    """Centre pad/crop ``(C, X, Y, Z)`` to the slice size in the two in-plane axes; the slice axis is kept."""
    from monai.transforms import ResizeWithPadOrCrop

    size = list(spec.roi)
    size.insert(spec.slice_axis, -1)
    return _plain(ResizeWithPadOrCrop(size)(tensor))


def _plain(tensor) -> torch.Tensor:
    """A MONAI MetaTensor as a plain tensor (plain tensors collate and pickle cheaply)."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor


def slice_view(view: str) -> A.Compose | None:
    """Albumentations for ``(H, W)`` float slices in [0, 1] and their masks; None for 'test'.
    weak: affine jitter (scale 0.9-1.1, rotate 10 degrees, shift 5%) and brightness/contrast 0.1."""
    if view == "test":
        return None
    if view != "weak":
        raise ValueError(f"data.train_view: expected 'test' or 'weak' for segmentation, got '{view}'")
    return A.Compose([A.Affine(scale=(0.9, 1.1), rotate=(-10, 10), translate_percent=(-0.05, 0.05), p=1.0),
                      A.RandomBrightnessContrast(0.1, 0.1, p=0.5)])


class SliceDataset(Dataset):
    """2-D slices of every volume along ``spec.slice_axis``, centre padded/cropped to ``spec.roi``.

    Item: ``{"image": (1, H, W), "label": (H, W) long or -1, "index": global slice index,
    "id": "<volume>:<axis>:<slice>"}``. ``index`` may be ``(index, seed)`` (seeded augmentation).
    """

    def __init__(self, volumes: list[Volume], spec: VolumeSpec, view: str = "test",
                 hide_labels: bool = False):
        self.spec, self.view, self.pipeline = spec, view, slice_view(view)
        self.images = [pad_in_plane(v.image, spec) for v in volumes]
        self.labels = None if hide_labels or any(v.label is None for v in volumes) else \
            [pad_in_plane(v.label[None], spec)[0] for v in volumes]
        axis = spec.slice_axis
        self.items = [(i, s) for i, v in enumerate(volumes) for s in range(v.image.shape[1 + axis])]
        self.ids = [f"{volumes[i].name}:{axis}:{s}" for i, s in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, None)
        volume, position = self.items[index]
        axis = self.spec.slice_axis
        image = self.images[volume].select(1 + axis, position)  # (1, H, W)
        label = None if self.labels is None else self.labels[volume].select(axis, position)
        if self.pipeline is not None:
            self.pipeline.set_random_seed(seed if seed is not None else index)
            out = self.pipeline(image=image[0].numpy(), mask=(label if label is not None
                                                              else torch.zeros_like(image[0])).numpy())
            image = torch.from_numpy(np.ascontiguousarray(out["image"]))[None].float()
            label = None if label is None else torch.from_numpy(np.ascontiguousarray(out["mask"])).long()
        return {"image": image.contiguous(), "label": UNLABELLED if label is None else label.long(),
                "index": index, "id": self.ids[index]}


def foreground_box(image: torch.Tensor, threshold: float) -> tuple[tuple[int, int], ...]:
    """Per spatial axis ``(first, end)`` of the bounding box of the voxels of ``image (C, X, Y, Z)`` whose
    intensity (any channel) is at least ``threshold``; the whole volume when none is."""
    inside = (image >= threshold).any(dim=0)
    if not inside.any():
        return tuple((0, s) for s in inside.shape)
    box = []
    for axis in range(inside.dim()):
        hits = torch.nonzero(inside.any(dim=tuple(a for a in range(inside.dim()) if a != axis))).flatten()
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def patch_corner(rng: np.random.Generator, shape: tuple[int, ...], roi: tuple[int, ...],
                 box: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    """A corner drawn uniformly so the ``roi`` patch lies within ``box`` (centred on a box smaller than the
    patch), kept inside a volume of ``shape``."""
    corner = []
    for size, r, (first, end) in zip(shape, roi, box, strict=True):
        low, high = (first, end - r) if end - first >= r else ((first + end - r) // 2,) * 2
        corner.append(min(max(int(rng.integers(low, high + 1)), 0), size - r))
    return tuple(corner)


class PatchDataset(Dataset):
    """``patches_per_volume`` fixed 3-D patches of ``spec.roi`` per volume (positions seeded by
    index, so the same index is the same patch on every epoch and process), drawn within the foreground's
    bounding box or over the whole volume (``spec.patch_region``).

    Item: ``{"image": (1, X, Y, Z), "label": (X, Y, Z) long or -1, "index", "id": "<volume>:patch:<n>"}``.
    """

    def __init__(self, volumes: list[Volume], spec: VolumeSpec, patches_per_volume: int,
                 hide_labels: bool = False, seed: int = 0):
        from monai.transforms import SpatialPad

        pad = SpatialPad(spec.roi)
        self.spec = spec
        self.images = [_plain(pad(v.image)) for v in volumes]
        self.labels = None if hide_labels or any(v.label is None for v in volumes) else \
            [_plain(pad(v.label[None]))[0] for v in volumes]
        boxes = [foreground_box(image, spec.foreground_threshold) if spec.patch_region == "foreground"
                 else tuple((0, s) for s in image.shape[1:]) for image in self.images]
        self.corners = []
        for i in range(len(volumes) * patches_per_volume):
            shape = self.images[i // patches_per_volume].shape[1:]
            rng = np.random.default_rng([seed, i])
            self.corners.append(patch_corner(rng, tuple(shape), tuple(spec.roi),
                                             boxes[i // patches_per_volume]))
        self.patches_per_volume = patches_per_volume
        self.ids = [f"{volumes[i // patches_per_volume].name}:patch:{i % patches_per_volume}"
                    for i in range(len(self.corners))]

    def __len__(self) -> int:
        return len(self.corners)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index = key[0] if isinstance(key, tuple) else key
        volume = index // self.patches_per_volume
        window = tuple(slice(c, c + r) for c, r in zip(self.corners[index], self.spec.roi, strict=True))
        image = self.images[volume][(slice(None), *window)]
        label = UNLABELLED if self.labels is None else self.labels[volume][window].long()
        return {"image": image.contiguous(), "label": label, "index": index, "id": self.ids[index]}


class VolumeDataset(Dataset):
    """Whole preprocessed volumes: ``{"image": (1, X, Y, Z), "label": (X, Y, Z) long or -1, "index"}``."""

    def __init__(self, volumes: list[Volume]):
        self.volumes = volumes

    def __len__(self) -> int:
        return len(self.volumes)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index = key[0] if isinstance(key, tuple) else key
        v = self.volumes[index]
        return {"image": v.image, "label": UNLABELLED if v.label is None else v.label, "index": index}


class SegmentationDataModule(L.LightningDataModule):
    """NIfTI volumes from a datalist: training samples (slices or patches) and evaluation volumes.

    Args:
        datalist: datalist JSON (path or ``demo://skull_stripping/<subject>.json``).
        class_names: names of the label values 0..C-1 (0 = background).
        role: 'source' (labelled training) or 'target' (training labels hidden).
        train_key: datalist key of the training volumes.
        eval_key: datalist key of the evaluation volumes (validation, test and predict); default
            ``train_key``: adaptation is transductive, the adapted volumes are the ones reported.
        input: preprocessing and sample geometry (a VolumeSpec); None adopts the source artifact's.
        batch_size: GLOBAL training batch size (slices or patches), split over processes.
        num_workers: DataLoader workers per process.
        train_view: 'weak' (2-D affine + intensity jitter) or 'test' (none; 3-D always 'test').
        patches_per_volume: 3-D mode, fixed patches drawn per training volume.
    """

    def __init__(self, datalist: str, class_names: list[str], role: Literal["source", "target"] = "target",
                 train_key: str = "training", eval_key: str | None = None, input: VolumeSpec | None = None,
                 batch_size: int = 16, num_workers: int = 0, train_view: Literal["test", "weak"] = "weak",
                 patches_per_volume: int = 64):
        super().__init__()
        check_counts(1, batch_size=batch_size, patches_per_volume=patches_per_volume)
        check_counts(0, num_workers=num_workers)
        if len(class_names) < 2:
            raise ValueError("data.class_names: expected at least 2 names (background first), got "
                             f"{class_names}")
        self.datalist, self.class_names, self.role = datalist, list(class_names), role
        self.train_key, self.eval_key = train_key, eval_key or train_key
        self.input_spec, self.batch_size, self.eval_batch_size = input, batch_size, 1
        self.num_workers, self.train_view = num_workers, train_view
        self.patches_per_volume = patches_per_volume
        self.volumes: dict[str, list[Volume]] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prepare_data(self) -> None:
        read_datalist(self.datalist, self.train_key)  # fetches demo data on rank 0

    def setup(self, stage: str | None = None) -> None:
        """Load the volumes once the spec is known (an adaptation method sets it from the
        source artifact after this hook has run, so loading also happens on first use)."""
        if self.input_spec is not None:
            self.load_volumes()

    def load_volumes(self) -> dict[str, list[Volume]]:
        if self.volumes:
            return self.volumes
        if self.input_spec is None:
            raise RuntimeError("data.input is not set and no source artifact provided one")
        entries = {key: read_datalist(self.datalist, key)
                   for key in dict.fromkeys([self.train_key, self.eval_key])}
        loaded = {key: [load_volume(e, self.input_spec, self.num_classes) for e in rows]
                  for key, rows in entries.items()}
        if self.role == "source" and any(v.label is None for v in loaded[self.train_key]):
            missing = [v.name for v in loaded[self.train_key] if v.label is None]
            raise DatalistError(f"{self.datalist}: source training needs a 'label' for every "
                                f"'{self.train_key}' entry; missing for {missing}")
        self.volumes = {"train": loaded[self.train_key], "eval": loaded[self.eval_key]}
        return self.volumes

    def dataset(self, split: str, view: str = "test", with_labels: bool = False) -> Dataset:
        """``train`` samples (labels hidden for a target role unless ``with_labels``, used only by
        the named upper-bound experiments) or ``eval`` volumes."""
        self.load_volumes()
        if split == "eval":
            return VolumeDataset(self.volumes["eval"])
        hide = self.role == "target" and not with_labels
        if self.input_spec.mode == "2d":
            return SliceDataset(self.volumes["train"], self.input_spec, view, hide_labels=hide)
        return PatchDataset(self.volumes["train"], self.input_spec, self.patches_per_volume, hide_labels=hide,
                            seed=int(os.environ.get("PL_GLOBAL_SEED", 0)))

    def num_samples(self, split: str = "train") -> int:
        return len(self.dataset(split))

    def sample_ids(self) -> list[str]:
        """Stable ids of the training samples in index order (``<volume>:<axis>:<slice>`` in 2-D)."""
        return list(self.dataset("train").ids)

    def _loader(self, dataset, batch_size: int, shuffle: bool, drop_last: bool,
                seeded: bool = False) -> DataLoader:
        return global_batch_loader(self, dataset, batch_size, shuffle, drop_last, seeded)

    def train_dataloader(self) -> DataLoader:
        view = self.train_view if self.input_spec.mode == "2d" else "test"
        return self._loader(self.dataset("train", view), self.batch_size, shuffle=True, drop_last=True,
                            seeded=view != "test")

    def val_dataloader(self) -> DataLoader:
        # one volume per batch; under DDP every rank gets the same number of volumes (padded with
        # repeats, removed when scores are gathered), since a rank with no batch would skip the
        # epoch-end gather that the others wait in
        trainer = getattr(self, "trainer", None)
        dataset = self.dataset("eval")
        if trainer is None or trainer.world_size == 1:
            return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=self.num_workers)
        sampler = DistributedSampler(dataset, num_replicas=trainer.world_size, rank=trainer.global_rank,
                                     shuffle=False)
        return DataLoader(dataset, batch_size=1, sampler=sampler, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        # every rank predicts every volume; the mask writer writes on rank 0 only
        return DataLoader(self.dataset("eval"), batch_size=1, shuffle=False, num_workers=self.num_workers)

    def bank_dataloader(self, with_labels: bool = False) -> DataLoader:
        """Unshuffled, unaugmented pass over the training samples (priors and BN statistics)."""
        return self._loader(self.dataset("train", "test", with_labels), self.batch_size, shuffle=False,
                            drop_last=False)
