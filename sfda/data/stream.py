"""The data side of online test-time adaptation: a stream of target domains, batches in a fixed, seeded
order (``sfda.tasks.stream`` is the module side: predict, score, adapt, reset).

A stream is a sequence of DOMAINS (shifts), each a set of labelled images: the clean images of a real data
set under one corruption at one severity (``CorruptedImages``, generated on the fly with
``sfda.data.corruptions``), or the published CIFAR-10-C / ImageNet-C files. The ``setting`` says how the
domains follow each other and whether the model returns to the source at each one:

- ``reset_each_shift``: domain after domain; the model is reset to the source weights at each new domain.
- ``continual``: domain after domain, never reset (CoTTA's continual protocol).
- ``gradual``: continual, each corruption passing through severities 1, 2, 3, 4, 5, 4, 3, 2, 1 before the next
  (CoTTA's gradual setting; ``severities`` is then ignored).
- ``mixed_domains``: the samples of every domain shuffled together into one domain-mixed stream, never reset.

``label_order: correlated`` orders each domain's samples by label along the stream (a Dirichlet draw per
class over the domain's batches, concentration ``dirichlet_alpha``; RoTTA's and SAR's practical setting):
small alpha, long runs of one class; large alpha, nearly i.i.d.

Batches never span two domains (except in ``mixed_domains``): a domain's last batch may be smaller. Each item
is ``{"image", "label", "index", "domain", "weight"}``: ``index`` is the sample's position in the whole
stream (unique), ``domain`` its domain's number, ``weight`` 0 for the copy a process takes when its share of a
final batch would be empty (under DDP), else 1. The online module takes ``label`` out before the method sees
the batch; labels only score.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .checks import check_counts
from .corruptions import CORRUPTIONS, SEVERITIES, Table, check_corruption, corrupt
from .digits import DATASETS, class_names, load_digits_split
from .image_files import read_image
from .transforms import InputSpec, build_view, to_tensor
from .volumes import VolumeSpec

Setting = Literal["reset_each_shift", "continual", "gradual", "mixed_domains"]
LabelOrder = Literal["iid", "correlated"]
GRADUAL = (1, 2, 3, 4, 5, 4, 3, 2, 1)
CORRUPTION_SEED = 20_190_401  # corrupted images depend on (corruption, severity, image) only: fixed data


@dataclass(frozen=True)
class Domain:
    """One shift of the stream: ``images`` (an ``(N, H, W[, 3]) uint8`` array, or an array of image file
    paths) and ``labels (N,)``, shown under ``corruption`` at ``severity`` (None: as stored)."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    corruption: str | None = None
    severity: int | None = None
    table: Table = "cifar"

    def __len__(self) -> int:
        return len(self.labels)

    def item(self, index: int, spec: InputSpec, pipeline) -> tuple[torch.Tensor, int]:
        """Sample ``index`` as the model takes it: ``(image (C, H, W), label)``."""
        return to_tensor(self.image(index), spec, pipeline), int(self.labels[index])

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` as the stream shows it (uint8); a corruption's randomness is fixed by the image."""
        raw = self.images[index]
        if isinstance(raw, (str, Path)):  # a published benchmark's image file
            raw = read_image(raw, index)
        if self.corruption is None:
            return raw
        seed = (CORRUPTION_SEED, CORRUPTIONS.index(self.corruption), self.severity, int(index))
        return corrupt(raw, self.corruption, self.severity, np.random.default_rng(seed), self.table)


class StreamSource:
    """Where a stream's domains come from (a recipe names one under ``data.source``)."""

    class_names: list[str]

    def domain(self, corruption: str, severity: int) -> Domain:
        """The domain of ``corruption`` at ``severity``."""
        raise NotImplementedError

    @property
    def shifts(self) -> list[str]:
        """The corruptions, in stream order."""
        raise NotImplementedError

    def use_input(self, spec) -> None:
        """The model's input spec, once known (a volume source preprocesses its volumes with it)."""


class CorruptedImages(StreamSource):
    """The clean images of a real digit set, corrupted on the fly with the ImageNet-C functions
    (GENERATED HERE with ``sfda.data.corruptions``; not MNIST-C, not CIFAR-10-C).

    Args:
        dataset: 'mnist', 'fashion_mnist' or 'optdigits' (fetched offline on first use).
        split: which split's images form every domain ('test': the 10,000 test images of MNIST).
        corruptions: the shifts in stream order (default all 15 in CoTTA's order).
        table: the corruption parameters: 'cifar' (made for 32-px images) or 'imagenet' (224 px).
        subset: use only this many images per domain (a fixed seeded subset), for quick runs.
        root: data cache (default ``$SFDA_DATA`` or ``./data``).
    """

    def __init__(self, dataset: Literal["mnist", "fashion_mnist", "optdigits"] = "mnist",
                 split: Literal["train", "test"] = "test", corruptions: list[str] | None = None,
                 table: Table = "cifar", subset: int | None = None, root: str | None = None):
        if dataset not in DATASETS:
            raise ValueError(f"data.source.dataset: unknown dataset '{dataset}', expected one of {DATASETS}")
        check_counts(1, **{"source.subset": subset})
        self.corruptions = list(CORRUPTIONS if corruptions is None else corruptions)
        if not self.corruptions:
            raise ValueError("data.source.corruptions: expected at least one corruption, got an empty list")
        for name in self.corruptions:
            check_corruption(name, 1, "data.source.corruptions")
        self.dataset, self.split, self.table, self.subset, self.root = dataset, split, table, subset, root
        self.class_names = class_names(dataset)
        self._images: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def shifts(self) -> list[str]:
        return self.corruptions

    def clean(self) -> tuple[np.ndarray, np.ndarray]:
        """The clean images ``(N, H, W) uint8`` and labels ``(N,)`` every domain is made from."""
        if self._images is None:
            images, labels = load_digits_split(self.dataset, self.split, self.root)
            if self.subset is not None and self.subset < len(labels):
                keep = np.sort(np.random.default_rng(12345).permutation(len(labels))[: self.subset])
                images, labels = images[keep], labels[keep]
            self._images = images, np.asarray(labels, dtype=np.int64)
        return self._images

    def domain(self, corruption: str, severity: int) -> Domain:
        images, labels = self.clean()
        return Domain(f"{corruption}-{severity}", images, labels, corruption, severity, self.table)


@dataclass(frozen=True)
class Step:
    """One global batch of the stream: ``(domain, image index)`` pairs, its position and its domain (-1 when
    mixed)."""

    samples: list[tuple[int, int]]
    position: int  # stream position of the first sample
    domain: int


def label_sorted(labels: np.ndarray, batches: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """An order of ``labels``' indices correlated in label: each class's samples are spread over ``batches``
    time slots by a Dirichlet(alpha) draw; slots in order, class by class within a slot (NOTE's and RoTTA's
    non-i.i.d. sampler), shuffled within a class."""
    slot = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet(np.full(batches, alpha))
        cuts = np.round(np.cumsum(shares) * len(members)).astype(int)[:-1]
        for k, part in enumerate(np.split(members, cuts)):
            slot[part] = k
    tie = rng.permutation(len(labels))
    return np.lexsort((tie, labels, slot))


def stream_steps(domains: list[Domain], batch_size: int, setting: Setting, label_order: LabelOrder,
                 alpha: float, seed: int) -> list[Step]:
    """The stream's global batches in order (see the module docstring)."""
    orders = []
    for domain in domains:  # a domain's order depends on the seed and the domain only, not on the others
        rng = np.random.default_rng([seed, zlib.crc32(domain.name.encode())])
        n = len(domain)
        if label_order == "correlated":
            orders.append(label_sorted(domain.labels, -(-n // batch_size), alpha, rng))
        else:
            orders.append(rng.permutation(n))
    if setting == "mixed_domains":
        pairs = [(d, int(i)) for d, order in enumerate(orders) for i in order]
        pairs = [pairs[k] for k in np.random.default_rng(seed).permutation(len(pairs))]
        return [Step(pairs[s : s + batch_size], s, -1) for s in range(0, len(pairs), batch_size)]
    steps, position = [], 0
    for d, order in enumerate(orders):
        for s in range(0, len(order), batch_size):
            samples = [(d, int(i)) for i in order[s : s + batch_size]]
            steps.append(Step(samples, position, d))
            position += len(samples)
    return steps


class StreamDataset(Dataset):
    """Items of the stream: key ``(domain, image index, stream position, weight)`` -> the item dict (``label``
    an int, or a ``(H, W)`` mask for a segmentation stream)."""

    def __init__(self, domains: list[Domain], spec):
        self.domains, self.spec = domains, spec
        self.pipeline = build_view(spec, "test") if isinstance(spec, InputSpec) else None

    def __len__(self) -> int:
        return sum(len(d) for d in self.domains)

    def __getitem__(self, key: tuple[int, int, int, float]) -> dict:
        domain, index, position, weight = key
        image, label = self.domains[domain].item(index, self.spec, self.pipeline)
        return {"image": image, "label": label, "index": position, "domain": domain, "weight": weight}


class StreamBatchSampler(Sampler[list]):
    """This process's share of each global batch from ``start`` on: rank r takes the r-th contiguous slice;
    a rank whose slice of a small final batch is empty takes the batch's last sample with weight 0 (so every
    process runs every step; the copy is not scored)."""

    def __init__(self, steps: list[Step], start: int = 0, rank: int = 0, world_size: int = 1):
        self.steps, self.start, self.rank, self.world_size = steps, start, rank, world_size

    def __iter__(self):
        for step in self.steps[self.start :]:
            share = -(-len(step.samples) // self.world_size)
            first = self.rank * share
            mine = [(d, i, step.position + first + k, 1.0)
                    for k, (d, i) in enumerate(step.samples[first : first + share])]
            if not mine:
                d, i = step.samples[-1]
                mine = [(d, i, step.position + len(step.samples) - 1, 0.0)]
            yield mine

    def __len__(self) -> int:
        return len(self.steps)  # the whole stream: a resumed run's loop counts the steps already done


class StreamLoader(DataLoader):
    """A DataLoader that Lightning treats as resumable (``state_dict``): the position comes from the online
    module (its count of steps done, restored with its checkpoint), so nothing is stored here."""

    def state_dict(self) -> dict:
        return {"stream_start": self.batch_sampler.start}

    def load_state_dict(self, state: dict) -> None:
        """The module's restored count already positioned the sampler."""


class StreamDataModule(L.LightningDataModule):
    """A stream of target domains for online test-time adaptation (``sfda fit`` of an online method).

    Args:
        source: where the domains come from (``CorruptedImages``, ...).
        setting: reset_each_shift | continual | gradual | mixed_domains (see the module docstring).
        severities: the severities of every corruption, in order (default [5]); gradual ignores them.
        label_order: iid | correlated (Dirichlet-sorted labels within each domain).
        dirichlet_alpha: the concentration of ``correlated`` (RoTTA's 0.1 ... SAR's sorted labels are ~0).
        batch_size: GLOBAL batch size (split over processes); the online methods' papers use 64 (CIFAR) to
            200 (CoTTA, CIFAR), 1 where a method supports single images.
        num_workers: DataLoader workers per process.
        input: the model's input spec; None adopts the source artifact's.
        checkpoint_every: save a checkpoint every this many steps (a stopped stream resumes from the last).
    """

    def __init__(self, source: StreamSource, setting: Setting = "continual",
                 severities: list[int] | None = None, label_order: LabelOrder = "iid",
                 dirichlet_alpha: float = 0.1, batch_size: int = 64, num_workers: int = 0,
                 input: InputSpec | VolumeSpec | None = None, checkpoint_every: int = 100):
        super().__init__()
        check_counts(1, batch_size=batch_size, checkpoint_every=checkpoint_every)
        check_counts(0, num_workers=num_workers)
        if setting not in Setting.__args__:
            raise ValueError(f"data.setting: expected one of {list(Setting.__args__)}, got {setting!r}")
        if label_order not in LabelOrder.__args__:
            raise ValueError(f"data.label_order: expected one of {list(LabelOrder.__args__)}, got "
                             f"{label_order!r}")
        if not dirichlet_alpha > 0:
            raise ValueError(f"data.dirichlet_alpha: expected a concentration > 0, got {dirichlet_alpha}")
        self.severities = [5] if severities is None else list(severities)
        if not self.severities:
            raise ValueError("data.severities: expected at least one severity in 1-5, got an empty list")
        for severity in self.severities:
            if severity not in SEVERITIES:
                raise ValueError(f"data.severities: expected severities in 1-5, got {severity!r}")
        self.source, self.setting, self.label_order = source, setting, label_order
        self.dirichlet_alpha, self.batch_size, self.num_workers = dirichlet_alpha, batch_size, num_workers
        self.checkpoint_every = checkpoint_every
        self.input_spec = input
        self.class_names = list(source.class_names)
        self.domains: list[Domain] = []

    is_stream = True  # `sfda fit` of a method that does not train (source, BN) passes over a stream

    @property
    def input_spec(self):
        return self._input_spec

    @input_spec.setter
    def input_spec(self, spec) -> None:
        self._input_spec = spec
        if spec is not None:
            self.source.use_input(spec)

    @property
    def resets(self) -> bool:
        """Whether the model returns to the source weights at each new domain."""
        return self.setting == "reset_each_shift"

    def setup(self, stage: str | None = None) -> None:
        if self.domains:
            return
        plan = [(c, s) for c in self.source.shifts
                for s in (GRADUAL if self.setting == "gradual" else self.severities)]
        self.domains = [self.source.domain(c, s) for c, s in plan]

    @property
    def domain_names(self) -> list[str]:
        self.setup()
        return [d.name for d in self.domains]

    def num_samples(self, split: str = "train") -> int:
        self.setup()
        return sum(len(d) for d in self.domains)

    def steps(self) -> list[Step]:
        """The stream's global batches, seeded by the run seed."""
        self.setup()
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        return stream_steps(self.domains, self.batch_size, self.setting, self.label_order,
                            self.dirichlet_alpha, seed)

    def train_dataloader(self) -> DataLoader:
        if self.input_spec is None:
            raise RuntimeError("data.input is not set and no source artifact provided one")
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        module = trainer.lightning_module if trainer is not None else None
        start = int(getattr(module, "stream_steps", 0))  # a resumed run's steps done
        sampler = StreamBatchSampler(self.steps(), start, rank, world)
        return StreamLoader(StreamDataset(self.domains, self.input_spec), batch_sampler=sampler,
                            num_workers=self.num_workers, collate_fn=collate_stream)


def collate_stream(items: list[dict]) -> dict:
    """Stack a stream batch: ``image (B, C, H, W)``, ``label`` ``(B,)`` (masks ``(B, H, W)``),
    ``index``/``domain`` ``(B,)`` int64, ``weight (B,)`` float32."""
    out = {"image": torch.stack([it["image"] for it in items])}
    if isinstance(items[0]["label"], torch.Tensor):
        out["label"] = torch.stack([it["label"] for it in items]).long()
    for key in ("label", "index", "domain"):
        if key in out:
            continue
        out[key] = torch.tensor([it[key] for it in items], dtype=torch.int64)
    out["weight"] = torch.tensor([it["weight"] for it in items], dtype=torch.float32)
    return out
