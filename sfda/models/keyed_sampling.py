"""torchvision's positive/negative anchor and RoI sampling, drawn from per-image keys.

``BalancedPositiveNegativeSampler`` draws from each process's global random stream, so a Faster
R-CNN trained on 1 or N processes samples different anchors and RoIs for the same image, and the
trajectory depends on the process count. ``KeyedSampler`` draws each image's permutation from a
generator seeded by (run seed, global step, GLOBAL sample index, which sampler): the same image at
the same step samples the same anchors however the batch is split, and after a resume.
"""

from __future__ import annotations

import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

from .keyed_dropout import sample_keys


class KeyedSampler(BalancedPositiveNegativeSampler):
    """The torchvision sampler with per-image seeds; ``set_keys`` before each training pass."""

    def __init__(self, batch_size_per_image: int, positive_fraction: float, salt: int):
        super().__init__(batch_size_per_image, positive_fraction)
        self.salt = salt
        self.keys: list[int] | None = None

    def set_keys(self, index: torch.Tensor, seed: int, step: int) -> None:
        """Seeds of the batch's images (global ``index (B,)``) at training ``step``."""
        self.keys = (sample_keys(index.cpu(), seed, step) ^ self.salt).tolist()

    def __call__(self, matched_idxs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if self.keys is None or len(self.keys) != len(matched_idxs):
            raise RuntimeError(
                "KeyedSampler: set_keys(index, seed, step) must be called with the batch's "
                "global sample indices before each training pass"
            )
        positives, negatives = [], []
        for matched, key in zip(matched_idxs, self.keys, strict=True):
            generator = torch.Generator().manual_seed(key & 0x7FFF_FFFF_FFFF_FFFF)
            positive = torch.where(matched >= 1)[0]
            negative = torch.where(matched == 0)[0]
            num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)
            pick_pos = positive[
                torch.randperm(positive.numel(), generator=generator)[:num_pos].to(positive.device)
            ]
            pick_neg = negative[
                torch.randperm(negative.numel(), generator=generator)[:num_neg].to(negative.device)
            ]
            pos_mask = torch.zeros_like(matched, dtype=torch.uint8)
            neg_mask = torch.zeros_like(matched, dtype=torch.uint8)
            pos_mask[pick_pos] = 1
            neg_mask[pick_neg] = 1
            positives.append(pos_mask)
            negatives.append(neg_mask)
        return positives, negatives


def use_keyed_sampling(model) -> list[KeyedSampler]:
    """Replace the RPN's and the RoI heads' samplers of a torchvision Faster R-CNN; returns both."""
    samplers = []
    for salt, part in enumerate((model.rpn, model.roi_heads), start=1):
        old = part.fg_bg_sampler
        part.fg_bg_sampler = KeyedSampler(old.batch_size_per_image, old.positive_fraction, salt * 0x5DEECE66D)
        samplers.append(part.fg_bg_sampler)
    return samplers
