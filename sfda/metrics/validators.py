"""Label-free validators: a score of a checkpoint computed without any target label.

Each is logged as ``label_free/<name>`` at every validation, can pick the checkpoint (a recipe's
``selection``) and be a sweep's objective. Which one tracks accuracy is measured, not assumed
(Musgrave et al., "Three New Validators and a Large-Scale Benchmark Ranking for Unsupervised
Domain Adaptation", 2022; ``benchmarks/selection.py``).

- entropy (lower is better): mean prediction entropy (confidence).
- im (lower): mean entropy minus the entropy of the mean prediction (confident and diverse).
- snd (higher): soft neighbourhood density (Saito et al., ICCV 2021).
- bnm (higher): nuclear norm of the ``(N, C)`` prediction matrix / N (Cui et al., CVPR 2020; a
  validator in Musgrave 2022).
- class_ami (higher): adjusted mutual information between k-means clusters of the features
  (k = classes) and the predictions (Musgrave 2022).
- view_agreement (higher): fraction of samples predicted the same class on the test view and on
  a strong view (needs ``data.eval_strong_view``).
- teacher_agreement (higher): fraction of samples the network and its EMA teacher predict the
  same (methods with a teacher).

DEV and other validators that need source data are out: the source data is not here.

Logged beside them, not a validator (it picks no checkpoint): ``label_free/marginal_entropy``, the
entropy (nats) of the mean prediction over the evaluation pass, the class marginal that the collapse
guard (``sfda.run.guards.CollapseGuard``) compares with the source model's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..losses import information_maximization
from ..pseudo_labels import entropy, kmeans
from ..run.checks import RunConfigError
from ..run.keys import LABEL_FREE, MARGINAL_ENTROPY

PREFIX = LABEL_FREE
# the validator with the smallest worst-case regret in benchmarks/selection.py (9 benchmark x method
# grids: IM, BNM and ClassAMI 14.5 points below the oracle's pick at worst, entropy 14.7; IM has the
# smallest mean regret of the three); no validator met the goal of 1 point everywhere
DEFAULT_VALIDATOR = "label_free/im"


def marginal_entropy(probs: torch.Tensor) -> torch.Tensor:
    """``(N, C) -> ()``: entropy (nats) of the mean prediction, the predicted class marginal; 0 when every
    sample is predicted one class, ``log C`` when the classes are predicted equally often."""
    return entropy(probs.float().mean(dim=0, keepdim=True))[0].clamp_min(0)


def batch_nuclear_norm(probs: torch.Tensor) -> torch.Tensor:
    """``(N, C) -> ()``: sum of the singular values of the prediction matrix, divided by N."""
    return torch.linalg.svdvals(probs.double()).sum().float() / probs.shape[0]


def class_ami(features: torch.Tensor, probs: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``features (N, D), probs (N, C) -> ()``: AMI of k-means clusters (k = C, cosine, seeded) vs argmax."""
    from sklearn.metrics import adjusted_mutual_info_score

    k = min(probs.shape[1], features.shape[0])
    _, clusters = kmeans(features.float(), k, seed=seed, cosine=True)
    score = adjusted_mutual_info_score(clusters.cpu().numpy(), probs.argmax(1).cpu().numpy())
    return torch.tensor(float(score))


def agreement(probs: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``(N, C), (N, C) -> ()``: fraction of rows with the same argmax."""
    return (probs.argmax(1) == other.argmax(1)).float().mean()


SIMILARITY_BLOCK_ELEMENTS = 2**20
"""Entries of one block of an N x N similarity matrix held at a time (4 MiB of float32, at least 16 rows;
its softmax and entropy hold a few more of that size). A fixed 2,048 rows, as before, is 0.5 GB per matrix
over 60,000 samples."""
SND_MAX_SAMPLES = 2**16
"""SND is O(N^2): above this many samples it is computed on a fixed seeded subset of this size (its
queries and their neighbours both), about a minute on one CPU thread. 600,000 samples would be 3.6e11
similarities, hours. Targets up to 65,536 samples (MNIST, VisDA-2017's 55k) use every sample."""


def soft_neighbourhood_density(probs: torch.Tensor, temperature: float = 0.05,
                               block_elements: int = SIMILARITY_BLOCK_ELEMENTS,
                               max_samples: int = SND_MAX_SAMPLES) -> torch.Tensor:
    """SND (Saito et al., 2021): mean entropy of each sample's softmax over its scaled cosine
    similarities to all other samples' predictions. Higher = denser neighbourhoods. ``(N, C) -> ()``;
    computed in blocks of rows of about ``block_elements`` entries, over a seeded subset of
    ``max_samples`` rows where N is larger (the same subset on every process)."""
    if probs.shape[0] < 2:
        return probs.new_tensor(float("nan"))
    if probs.shape[0] > max_samples:
        keep = torch.randperm(probs.shape[0], generator=torch.Generator().manual_seed(0))[:max_samples]
        probs = probs[keep.sort().values.to(probs.device)]
    normed = F.normalize(probs.float(), dim=1)
    chunk_size = max(16, block_elements // normed.shape[0])
    total = normed.new_zeros(())
    for start in range(0, normed.shape[0], chunk_size):
        sims = normed[start : start + chunk_size] @ normed.T / temperature
        rows = torch.arange(sims.shape[0])
        sims[rows, rows + start] = -float("inf")  # exclude self
        total = total + entropy(sims.softmax(dim=1)).sum()
    return total / normed.shape[0]


@dataclass(frozen=True)
class Validator:
    """A label-free validator: its name, which direction is better, what it needs, and how it is computed
    from ``{"probs", "features", "strong", "teacher"}`` tensors (N rows each)."""

    name: str
    mode: Literal["max", "min"]
    needs: Literal["probs", "features", "strong", "teacher"]
    compute: Callable[[dict[str, torch.Tensor]], torch.Tensor]

    @property
    def key(self) -> str:
        return PREFIX + self.name


VALIDATORS = {
    v.name: v
    for v in (
        Validator("entropy", "min", "probs", lambda t: entropy(t["probs"]).mean()),
        Validator("im", "min", "probs", lambda t: information_maximization(t["probs"])),
        Validator("snd", "max", "probs", lambda t: soft_neighbourhood_density(t["probs"])),
        Validator("bnm", "max", "probs", lambda t: batch_nuclear_norm(t["probs"])),
        Validator("class_ami", "max", "features", lambda t: class_ami(t["features"], t["probs"])),
        Validator("view_agreement", "max", "strong", lambda t: agreement(t["probs"], t["strong"])),
        Validator("teacher_agreement", "max", "teacher", lambda t: agreement(t["probs"], t["teacher"])),
    )
}


def get_validator(name: str, field: str = "validator") -> Validator:
    """The validator ``name`` (``entropy`` or ``label_free/entropy``).

    Raises:
        ValueError: naming ``field`` and the known validators.
    """
    bare = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    if bare not in VALIDATORS:
        known = ", ".join(PREFIX + n for n in VALIDATORS)
        raise ValueError(f"{field}: unknown validator '{name}'; expected one of {known}")
    return VALIDATORS[bare]


def check_selection(by: str, mode: str | None) -> tuple[str, Literal["max", "min"]]:
    """A recipe's ``selection: {by, mode}`` as (the validator's logged key, its direction); a ``mode``
    contradicting the validator's own direction is refused."""
    validator = get_validator(by, "selection.by")
    if mode is not None and mode != validator.mode:
        better = "higher" if validator.mode == "max" else "lower"
        raise RunConfigError(
            f"selection.mode = {mode}: {validator.key} is better when {better}; expected "
            f"mode: {validator.mode} (or leave mode out)"
        )
    return validator.key, validator.mode


def compute_validators(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every validator whose inputs are present in ``tensors`` (``probs`` always), by name."""
    if tensors["probs"].shape[0] == 0:
        return {}
    return {name: v.compute(tensors) for name, v in VALIDATORS.items() if v.needs in tensors}


def label_free_figures(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``compute_validators`` and the class marginal's entropy (``MARGINAL_ENTROPY``), by name."""
    out = compute_validators(tensors)
    if out:
        out[MARGINAL_ENTROPY] = marginal_entropy(tensors["probs"])
    return out
