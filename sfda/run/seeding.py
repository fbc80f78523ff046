"""Per-step seeding of every random generator, so a resumed run draws what an uninterrupted one does."""

from __future__ import annotations

import os
import random

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


class StepSeeder(Callback):
    """Reseeds python, numpy and torch before every training step from (run seed, global step,
    rank), so dropout and other in-step randomness do not depend on what drew random numbers
    before (Lightning's loop restart does): a resumed run draws the same numbers as an
    uninterrupted one. Augmentations are seeded per sample by the sampler instead."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch,
                             batch_idx: int) -> None:
        seed = (int(os.environ.get("PL_GLOBAL_SEED", 0)) * 1000003 + trainer.global_step * 1009
                + trainer.global_rank) % 2**31
        seed_generators(seed)


def seed_generators(seed: int) -> None:
    """Seed python, numpy, torch's CPU generator and, once CUDA is in use, every CUDA generator.

    What ``torch.manual_seed`` does, without its cost before CUDA starts: there it queues a lazy CUDA
    seeding call that records the Python stack, about 3 ms a step inside Lightning's deep stack."""
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)
