"""Pose metrics: heatmap peaks and PCK per joint, as a torchmetrics Metric (sums of correct and counted
joints, so the result over several processes is the one of the whole set).

- PCK@0.05 (the pose SFDA benchmarks', from RegDA's ``accuracy``): a joint is correct when the argmax
  of its predicted heatmap lies within 0.5 x (heatmap size / 10) = 0.05 heatmap sizes of the target's.
- PCK@0.2 of a length the user's data defines (the torso diameter, or the person box's longer side).
Joints whose weight is 0 (not labelled, or outside the crop) are not counted.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from ..pseudo_labels.heatmaps import heatmap_peaks  # noqa: F401 (re-exported)


class PCK(Metric):
    """Percentage of correct keypoints per joint and overall: ``compute() -> {"pck": mean over counted
    joints, "pck/<joint>": per joint}``.

    ``update(predicted (B, K, 2), target (B, K, 2), weight (B, K), normaliser (B,))``: correct where
    ``|predicted - target| / normaliser < threshold``.
    """

    full_state_update = False

    def __init__(self, joint_names: list[str], threshold: float, **kwargs):
        super().__init__(**kwargs)
        self.joint_names, self.threshold = list(joint_names), threshold
        self.add_state(
            "correct", default=torch.zeros(len(joint_names), dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state(
            "counted", default=torch.zeros(len(joint_names), dtype=torch.float64), dist_reduce_fx="sum"
        )

    def update(
        self, predicted: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, normaliser: torch.Tensor
    ) -> None:
        distance = (predicted.float() - target.float()).norm(dim=-1) / normaliser.float()[:, None]
        counted = weight > 0
        self.correct += ((distance < self.threshold) & counted).sum(dim=0).double()
        self.counted += counted.sum(dim=0).double()

    def compute(self) -> dict[str, torch.Tensor]:
        per_joint = self.correct / self.counted.clamp(min=1)
        out = {"pck": self.correct.sum() / self.counted.sum().clamp(min=1)}
        out.update(
            {
                f"pck/{name}": value
                for name, value, n in zip(self.joint_names, per_joint, self.counted, strict=True)
                if n > 0
            }
        )
        return out
