"""The data contract: what every adaptation method may rely on from a target datamodule, whatever the task.

A user's own ``LightningDataModule`` works with every method once it offers these members; the
adaptation base checks them (``check_target_data``) before anything else is set up and names the
missing ones. Task-specific datamodules add their own (segmentation: ``sample_ids``, ``volumes``;
active adaptation: ``subset_dataloader``, ``active_epoch``, ``raw_sample``).

Every item a loader yields is a dict with ``"index"``: the GLOBAL sample index in
``[0, num_samples("train"))``, stable across epochs, processes and resumed runs (banks, priors and
pseudo-labels key on it), and the task's targets, hidden on target training items: ``"label"``
(-1 where hidden) for classification and segmentation; ``"boxes"``, ``"labels"``, ``"ignored"`` (lists
of per-image tensors, collated by ``sfda.data.detection.collate_boxes``; ``ignored`` marks crowd and
difficult regions that evaluation ignores) and ``"labelled"`` for detection;
``"keypoints"`` ``(K, 2)``, ``"weight"`` ``(K,)`` (0 where hidden or not labelled), ``"heatmaps"``
``(K, h, w)``, ``"matrix"`` ``(2, 3)`` (image -> input pixels) and ``"labelled"`` for pose, whose
``class_names`` are the joint names.

Multi-view items: a method that trains on a weak and a strong view of the same image says so with
``needs_strong_view = True``; the datamodule then adds ``"strong"``, the strong view drawn on the weak
view's geometry (detection: ``sfda.data.box_views``), or, for pose, ``"strong"`` with its own
``"strong_matrix"``, so a method maps between the views through the exact affines. The input spec
is resolved before either side is set up: the datamodule's ``input_spec`` is None until the
adaptation base adopts the source artifact's (``check_against_data``), and a datamodule that can
adopts the artifact's class names.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch.utils.data import DataLoader


@runtime_checkable
class TargetData(Protocol):
    """Members a target datamodule provides (see the module docstring for the items' keys).

    Attributes:
        class_names: names in the source model's output order (checked against the artifact).
        input_spec: the model's preprocessing; None until the source artifact's is adopted.
    """

    class_names: list[str]
    input_spec: Any

    def num_samples(self, split: str = "train") -> int:
        """Number of samples of ``split`` (after any subsetting)."""

    def train_dataloader(self) -> DataLoader:
        """Training batches of the (unlabelled) target set, a GLOBAL batch split over processes."""

    def val_dataloader(self) -> DataLoader:
        """The evaluation split (labels for reporting only, where a benchmark has them)."""

    def bank_dataloader(self) -> DataLoader:
        """Unshuffled test-view pass over the training set: the loader of the engine's target pass."""


CONTRACT_MEMBERS = ("class_names", "input_spec", "num_samples", "train_dataloader", "val_dataloader",
                    "bank_dataloader")


def check_target_data(datamodule) -> None:
    """Refuse a datamodule that lacks a member of ``TargetData``, naming the missing ones."""
    missing = [name for name in CONTRACT_MEMBERS if not hasattr(datamodule, name)]
    if missing:
        raise ValueError(f"data: {type(datamodule).__name__} lacks {missing}, which adaptation methods rely "
                         "on; see sfda.data.contract.TargetData for what a target datamodule provides")
