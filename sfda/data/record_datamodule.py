"""The part that datamodules of annotated records (detection boxes, pose keypoints) share: the arguments
every such set takes, the source hold-out, the seeded subsets, and the loaders over ``dataset(split)``.
A subclass reads its records into ``self.splits`` (``setup``) and builds its ``dataset``."""

from __future__ import annotations

from typing import Literal

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from .checks import check_counts
from .image_files import refuse_single_images
from .samplers import global_batch_loader

Role = Literal["source", "target"]
SOURCE_VAL_FRACTION = 0.1


def held_out(records: list) -> tuple[list, list]:
    """A seeded ``SOURCE_VAL_FRACTION`` of ``records`` (at least one) for source validation, and the rest."""
    order = np.random.default_rng(0).permutation(len(records))
    held = set(order[: max(1, int(len(records) * SOURCE_VAL_FRACTION))].tolist())
    rest = [r for i, r in enumerate(records) if i not in held]
    return rest or records, [r for i, r in enumerate(records) if i in held]


def seeded_subset(records: list, limit: int | None) -> list:
    """A fixed seeded subset of ``limit`` records, in their order (all when ``limit`` is None)."""
    if limit is None or limit >= len(records):
        return records
    keep = np.sort(np.random.default_rng(12345).permutation(len(records))[:limit])
    return [records[i] for i in keep]


class RecordDataModule(L.LightningDataModule):
    """Splits of records and their loaders. Subclasses set ``what`` (what a record is, for messages) and
    ``collate_fn``, fill ``self.splits`` in ``setup`` and implement ``dataset(split, train, strong)``."""

    what = "records"
    train_expects = "annotation files"
    collate_fn = None

    def __init__(
        self,
        train: list[str],
        eval: list[str] | None,
        val: list[str] | None,
        role: Role,
        batch_size: int,
        eval_batch_size: int,
        num_workers: int,
        train_subset: int | None,
        eval_subset: int | None,
        **counts: int | None,
    ):
        super().__init__()
        check_counts(
            1,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            train_subset=train_subset,
            eval_subset=eval_subset,
            **counts,
        )
        check_counts(0, num_workers=num_workers)
        if isinstance(train, str) or not train:
            raise ValueError(f"data.train: expected a list of {self.train_expects}, got {train!r}")
        self.locations = {"train": list(train), "eval": list(eval or []), "val": list(val or [])}
        refuse_single_images(self.locations, self.train_expects)
        self.role = role
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.subsets = {"train": train_subset, "eval": eval_subset}
        self.splits: dict[str, list] = {}

    def split_records(self, train: list, evaluation: list | None, val: list | None) -> None:
        """``self.splits`` from the records read: a source set validates on ``val`` (default: a held-out
        tenth of ``train``) and tests on ``evaluation`` (default: val); a target set adapts on ``train`` and
        evaluates on ``evaluation`` (default: ``train``, the transductive protocol). Subsets applied."""
        splits = {"train": train}
        if self.role == "source":
            if not val:
                splits["train"], val = held_out(train)
            splits["val"], splits["test"] = val, evaluation or val
        else:
            splits["val"] = splits["test"] = evaluation or train
        self.splits = {
            name: seeded_subset(records, self.subsets["train" if name == "train" else "eval"])
            for name, records in splits.items()
        }

    def dataset(self, split: str, train: bool = False, strong: bool = False):
        raise NotImplementedError

    def records_for(self, split: str) -> tuple[list, bool]:
        """The records of ``split`` (read on first use) and whether their labels must be hidden (target
        training). Refuses a set whose input spec is still unknown."""
        if self.input_spec is None:
            raise RuntimeError("data.input is not set and no source artifact provided one")
        self.setup()
        return self.splits[split], self.role == "target" and split == "train"

    def num_samples(self, split: str = "train") -> int:
        self.setup()
        return len(self.splits[split])

    def sample_name(self, split: str, index: int) -> str:
        """A readable id of sample ``index`` of ``split``."""
        return self.splits[split][index].name

    # loaders ------------------------------------------------------------------------------------
    def _loader(self, dataset, batch_size: int, shuffle: bool, drop_last: bool) -> DataLoader:
        # pad_ranks: every rank runs every evaluation batch; evaluation drops duplicates by index
        return global_batch_loader(
            self,
            dataset,
            batch_size,
            shuffle,
            drop_last,
            seeded=dataset.view != "test",
            pad_ranks=not drop_last,
            collate_fn=self.collate_fn,
            what=f"training {self.what}",
        )

    def train_dataloader(self) -> DataLoader:
        module = self.trainer.lightning_module if getattr(self, "trainer", None) is not None else None
        strong = bool(getattr(module, "needs_strong_view", False))
        return self._loader(self.dataset("train", train=True, strong=strong), self.batch_size, True, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), self.eval_batch_size, False, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), self.eval_batch_size, False, False)

    def predict_dataloader(self) -> DataLoader:
        # Lightning re-creates samplers in predict mode: a plain ordered loader (writers keep one row each)
        return DataLoader(
            self.dataset("test"),
            batch_size=self.eval_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
        )

    def bank_dataloader(self) -> DataLoader:
        """Unshuffled plain pass over the (unlabelled) training records: the engine's target pass."""
        return self._loader(self.dataset("train"), self.eval_batch_size, False, False)
