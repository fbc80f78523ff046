"""LightningDataModules for classification: the shared machinery and the real digit sets.

Roles: ``source`` (labelled; 90/10 train/val split of the train set for source
checkpoint selection) and ``target`` (the train split is the unlabelled adaptation set
with labels HIDDEN; val/test are the labelled evaluation split, used only for reporting).
"""

from __future__ import annotations

import os
from typing import Literal

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from .active import ActiveEpoch, CyclingBatchSampler, IndexedSubset, SealedLabels
from .checks import check_counts
from .class_split import ClassSplit
from .datasets import ImageDataset, MemoryBudget, PreparedInputs
from .digits import DATASETS, class_names, load_digits_split
from .samplers import GlobalBatchSampler
from .transforms import InputSpec, View

Role = Literal["source", "target"]
SOURCE_VAL_FRACTION = 0.1


class ImageClassificationDataModule(L.LightningDataModule):
    """Base: subclasses fill ``self.splits`` = {"train"|"val"|"test": (images, labels or None)}.

    Args:
        role: 'source' or 'target' (see module docstring).
        batch_size: GLOBAL training batch size (split over processes).
        eval_batch_size: global batch size of evaluation and bank passes.
        num_workers: DataLoader workers per process.
        train_view: augmentation of the training view ('test' = none).
        input: the model's input spec; None adopts the source artifact's (the method sets it).
        train_subset: use only this many training samples (a fixed seeded subset), for quick runs.
        eval_subset: the same for val/test.
        eval_strong_view: evaluation batches also carry ``"strong"``, a strong view of each image
            (seeded by the sample index), for the label-free ``view_agreement`` validator (one more
            forward pass per evaluation batch).
        keep_inputs_mib: memory (MiB) for the test-view inputs of all splits kept after their first use
            (``PreparedInputs``, uint8 where the view allows: 60k MNIST at 32x32x3 takes 184 MiB), so
            later passes skip decoding and resizing; samples beyond it are decoded every pass. Bounded,
            so memory does not grow with the data set beyond it; 0 keeps nothing.
    """

    def __init__(self, role: Role = "target", batch_size: int = 64, eval_batch_size: int = 256,
                 num_workers: int = 0, train_view: View = "weak", input: InputSpec | None = None,
                 train_subset: int | None = None, eval_subset: int | None = None,
                 eval_strong_view: bool = False, keep_inputs_mib: int = 1024):
        super().__init__()
        check_counts(1, batch_size=batch_size, eval_batch_size=eval_batch_size, train_subset=train_subset,
                     eval_subset=eval_subset)
        check_counts(0, num_workers=num_workers, keep_inputs_mib=keep_inputs_mib)
        self.role, self.batch_size, self.eval_batch_size = role, batch_size, eval_batch_size
        self.num_workers, self.train_view, self.input_spec = num_workers, train_view, input
        self.train_subset, self.eval_subset = train_subset, eval_subset
        self.eval_strong_view = eval_strong_view
        self.splits: dict[str, tuple] = {}
        self.class_names: list[str] = []
        self.prepared: dict[str, PreparedInputs] = {}  # by split and input spec
        self.prepared_budget = MemoryBudget(keep_inputs_mib * 1024**2)
        self.split: ClassSplit | None = None  # universal-DA class split; None = closed set

    @property
    def unknown_label(self) -> int | None:
        """Label of unknown target samples (one past the known classes), None in a closed-set run."""
        return self.split.unknown_label if self.split is not None and self.split.has_unknown else None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load_splits(self) -> None:
        """Fill ``self.splits`` and ``self.class_names``."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.load_splits()
            self.splits = {name: self._subset(name, *pair) for name, pair in self.splits.items()}
            images, labels = self.splits["train"]
            # only an annotator may reveal target training labels
            if self.role == "target" and labels is not None:
                self.splits["train"] = (images, SealedLabels(labels))

    def _subset(self, name: str, images, labels):
        limit = self.train_subset if name == "train" else self.eval_subset
        if limit is None or limit >= len(images):
            return images, labels
        keep = np.sort(np.random.default_rng(12345).permutation(len(images))[:limit])
        return ([images[i] for i in keep] if isinstance(images, list) else images[keep]), (
            None if labels is None else np.asarray(labels)[keep])

    def num_samples(self, split: str = "train") -> int:
        """Number of samples of a split (after subsetting)."""
        self.setup()
        return len(self.splits[split][0])

    def dataset(self, split: str, view: View = "test") -> ImageDataset:
        """The dataset of ``split``; target training data always comes with labels hidden."""
        if self.input_spec is None:
            raise RuntimeError("data.input is not set and no source artifact provided one")
        self.setup()
        images, labels = self.splits[split]
        hide = self.role == "target" and split == "train"
        strong = self.eval_strong_view and split in ("val", "test")
        key = f"{split} {self.input_spec!r}"
        prepared = self.prepared.setdefault(key, PreparedInputs(self.prepared_budget))
        return ImageDataset(images, labels, self.input_spec, view=view, hide_labels=hide, strong_view=strong,
                            prepared=prepared)

    def _loader(self, dataset, batch_size: int, shuffle: bool, drop_last: bool, epoch: int = 0,
                endless: bool = False) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if drop_last and len(dataset) < batch_size:
            raise ValueError(f"data.batch_size: {batch_size} is larger than the {len(dataset)} training "
                             "samples; the run would do zero steps")
        kind = CyclingBatchSampler if endless else GlobalBatchSampler
        sampler = kind(len(dataset), batch_size, shuffle, drop_last,
                       seed=int(os.environ.get("PL_GLOBAL_SEED", 0)), rank=rank, world_size=world,
                       seeded=dataset.view != "test")
        sampler.set_epoch(epoch)
        return DataLoader(dataset, batch_sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        module = self.trainer.lightning_module if getattr(self, "trainer", None) is not None else None
        if hasattr(module, "training_epoch"):  # the method composes its own epoch (active rounds)
            return module.training_epoch(self)
        # drop_last so every process runs the same number of steps (an uneven last batch would hang DDP)
        return self._loader(self.dataset("train", self.train_view), self.batch_size, shuffle=True,
                            drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), self.eval_batch_size, shuffle=False, drop_last=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), self.eval_batch_size, shuffle=False, drop_last=False)

    def predict_dataloader(self) -> DataLoader:
        # Lightning re-creates batch samplers in predict mode, so a plain ordered loader is used;
        # under DDP every rank predicts every sample and the CSV writer keeps one row per index.
        return DataLoader(self.dataset("test"), batch_size=self.eval_batch_size, shuffle=False,
                          num_workers=self.num_workers)

    def subset_dataloader(self, indices, labels=None, batch_size: int | None = None, view: View = "test",
                          shuffle: bool = False, drop_last: bool = False, epoch: int = 0,
                          endless: bool = False) -> DataLoader:
        """Loader over the training samples at global ``indices`` (with annotator ``labels`` if given);
        global ``batch_size`` (default: the evaluation batch), sampled as ``_loader`` does."""
        dataset = IndexedSubset(self.dataset("train", view), indices, labels)
        return self._loader(dataset, batch_size or self.eval_batch_size, shuffle, drop_last, epoch, endless)

    def active_epoch(self, pool, labelled, labels, labelled_batch_size: int, mixup: bool,
                     epoch: int) -> ActiveEpoch:
        """A training epoch of active adaptation (see ``ActiveEpoch``): batches of the pool (global indices
        ``pool``) each paired with a labelled batch, then (``mixup``) a pass over the labelled samples."""
        args = dict(view=self.train_view, shuffle=True, drop_last=True, epoch=epoch)
        unlabelled = self.subset_dataloader(pool, batch_size=self.batch_size, **args)
        stream = self.subset_dataloader(labelled, labels, labelled_batch_size, endless=True, **args)
        extra = self.subset_dataloader(labelled, labels, labelled_batch_size, **args) if mixup else None
        return ActiveEpoch(unlabelled, stream, extra)

    def reveal_labels(self, indices) -> np.ndarray:
        """Stored labels of the target training samples at ``indices`` (benchmark annotator only)."""
        self.setup()
        labels = self.splits["train"][1]
        if not isinstance(labels, SealedLabels):
            raise ValueError(f"{type(self).__name__}: the target training split has no stored labels to "
                             "reveal; use model.annotator: sfda.active.FileAnnotator to label queried "
                             "samples by hand")
        return labels.reveal(indices)

    def raw_sample(self, index: int):
        """Training sample ``index`` as stored: an image path or a uint8 array (for annotation)."""
        self.setup()
        return self.splits["train"][0][index]

    def bank_dataloader(self) -> DataLoader:
        """Unshuffled test-view pass over the (unlabelled) training set, for full bank refreshes."""
        return self._loader(self.dataset("train", "test"), self.eval_batch_size, shuffle=False,
                            drop_last=False)


class DigitsDataModule(ImageClassificationDataModule):
    """MNIST, optdigits or Fashion-MNIST, fetched offline into the data root on first use.

    Args:
        dataset: 'mnist', 'optdigits' or 'fashion_mnist'.
        root: data cache (default ``$SFDA_DATA`` or ``./data``).
        split: a universal-DA class split (see ``ClassSplit``): a source role keeps the source
            classes; a target role keeps shared and target-private classes and mixes in
            ``split.unknown_dataset``. None: all classes, closed set.
        (the rest: see ImageClassificationDataModule)
    """

    def __init__(self, dataset: Literal["mnist", "optdigits", "fashion_mnist"] = "mnist",
                 root: str | None = None, role: Role = "target", batch_size: int = 64,
                 eval_batch_size: int = 256, num_workers: int = 0, train_view: View = "weak",
                 input: InputSpec | None = None, train_subset: int | None = None,
                 eval_subset: int | None = None, split: ClassSplit | None = None,
                 eval_strong_view: bool = False, keep_inputs_mib: int = 1024):
        super().__init__(role, batch_size, eval_batch_size, num_workers, train_view, input, train_subset,
                         eval_subset, eval_strong_view, keep_inputs_mib)
        if dataset not in DATASETS:
            raise ValueError(f"data.dataset: unknown dataset '{dataset}', expected one of {DATASETS}")
        if split is not None and split.unknown_dataset is not None and split.unknown_dataset not in DATASETS:
            raise ValueError(f"data.split.unknown_dataset: unknown dataset '{split.unknown_dataset}', "
                             f"expected one of {DATASETS}")
        self.name, self.root, self.split = dataset, root, split
        names = class_names(dataset)
        if split is not None:
            missing = [c for c in split.source_classes + split.target_private if not 0 <= c < len(names)]
            if missing:
                raise ValueError(f"data.split: classes {missing} do not exist in {dataset} (ids "
                                 f"0..{len(names) - 1})")
            names = [names[c] for c in split.source_classes]
        self.class_names = names

    def prepare_data(self) -> None:
        """Fetch and cache both splits (rank 0 only, Lightning's contract)."""
        for name in {self.name} | ({self.split.unknown_dataset} if self.split and self.split.unknown_dataset
                                   else set()):
            for part in ("train", "test"):
                load_digits_split(name, part, self.root)

    def _load(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        images, labels = load_digits_split(self.name, part, self.root)
        if self.split is None:
            return images, labels
        if self.role == "source":
            return self.split.source_labels(images, labels)
        images, labels = self.split.relabel_target(images, labels)
        if self.split.unknown_dataset is not None:
            other, _ = load_digits_split(self.split.unknown_dataset, part, self.root)
            images, labels = self.split.mix_unknown(images, labels, other, seed=0 if part == "train" else 1)
        return images, labels

    def load_splits(self) -> None:
        train_x, train_y = self._load("train")
        test_x, test_y = self._load("test")
        if self.role == "source":
            order = np.random.default_rng(0).permutation(len(train_y))
            n_val = int(len(order) * SOURCE_VAL_FRACTION)
            val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
            self.splits = {"train": (train_x[train], train_y[train]), "val": (train_x[val], train_y[val]),
                           "test": (test_x, test_y)}
        else:
            self.splits = {"train": (train_x, train_y), "val": (test_x, test_y), "test": (test_x, test_y)}
