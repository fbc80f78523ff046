"""A batch sampler that makes the global batch independent of the number of processes."""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, Sampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample ``index`` in ``epoch`` of a run seeded ``seed``."""
    return (((seed * 1_000_003) + epoch) * 1_000_033 + index) % 2**31


class GlobalBatchSampler(Sampler[list]):
    """Yields this rank's share of each GLOBAL batch.

    One seeded permutation per epoch (``seed + epoch``) is cut into global batches of
    ``batch_size``; rank r takes the r-th contiguous slice of each. So the set of samples in
    global step t is the same on 1 or N processes, which keeps pseudo-labels, banks and
    (with synchronised BatchNorm) the training trajectory independent of the process count.
    Evaluation (``shuffle=False, drop_last=False``) covers every sample exactly once.

    With ``seeded`` each element is ``(index, sample_seed(seed, epoch, index))`` rather than
    ``index``: the dataset seeds that sample's random augmentation from it, so augmentations
    depend on neither the process count, the worker count nor what else drew random numbers
    (a resumed run draws the same ones).

    Args:
        num_samples: dataset length.
        batch_size: GLOBAL batch size, divisible by ``world_size`` when ``drop_last``.
        shuffle: permute each epoch.
        drop_last: drop the final incomplete global batch.
        seed: run seed.
        rank, world_size: this process and the number of processes.
        seeded: yield ``(index, seed)`` pairs (see above).
        pad_ranks: a rank whose share of the last batch is empty takes that batch's last sample again, so
            every rank runs every evaluation batch (for evaluations that drop duplicates by index, such as
            detection's; Lightning skips the epoch-end hooks of a rank without batches, and its gathers
            would then wait forever).
    """

    def __init__(self, num_samples: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1, seeded: bool = False, pad_ranks: bool = False):
        if batch_size % world_size and drop_last:
            raise ValueError(f"data.batch_size: the global batch size {batch_size} must be divisible by the "
                             f"number of processes {world_size}")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0
        self.seeded, self.pad_ranks = seeded, pad_ranks

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at each epoch start."""
        self.epoch = epoch

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_samples))
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_samples, generator=gen).tolist()

    def __iter__(self):
        order = self._order()
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            if len(batch) < self.batch_size and self.drop_last:
                return
            share = -(-len(batch) // self.world_size)  # ceil
            mine = batch[self.rank * share : (self.rank + 1) * share]
            if not mine and self.pad_ranks:
                mine = batch[-1:]
            if mine:
                yield [(i, sample_seed(self.seed, self.epoch, i)) for i in mine] if self.seeded else mine

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        if self.drop_last or rest == 0:
            return full
        if self.pad_ranks:
            return full + 1
        share = -(-rest // self.world_size)
        return full + (1 if self.rank * share < rest else 0)


def global_batch_loader(datamodule, dataset, batch_size: int, shuffle: bool, drop_last: bool, seeded: bool,
                        pad_ranks: bool = False, collate_fn=None, what: str = "training samples"
                        ) -> DataLoader:
    """A DataLoader over ``dataset`` with this process's ``GlobalBatchSampler`` (rank and world size from the
    datamodule's trainer, seed from the run) and ``datamodule.num_workers`` workers. Refuses a training
    loader with fewer ``what`` than one batch (the run would do zero steps)."""
    trainer = getattr(datamodule, "trainer", None)
    rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
    if drop_last and len(dataset) < batch_size:
        raise ValueError(f"data.batch_size: {batch_size} is larger than the {len(dataset)} {what}; "
                         "the run would do zero steps")
    seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
    sampler = GlobalBatchSampler(len(dataset), batch_size, shuffle, drop_last, seed=seed, rank=rank,
                                 world_size=world, seeded=seeded, pad_ranks=pad_ranks)
    workers = datamodule.num_workers
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate_fn,
                      persistent_workers=workers > 0)
