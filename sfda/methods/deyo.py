"""DeYO (Lee et al., "Entropy is not Enough for Test-Time Adaptation: From the Perspective of Disentangled
Factors", ICLR 2024): Tent's entropy minimisation of the normalisation layers' scale and shift, on the samples
whose entropy is low AND whose prediction drops when the image's shape is destroyed (a seeded shuffle of a
grid of patches; the pseudo-label probability difference, PLPD), each weighted by its entropy and PLPD. Online
on a stream (``sfda.data.stream``), or offline over epochs of a stored target set; classification. See
docs/methods/deyo.md."""

from __future__ import annotations

import math
import os

import torch
from torchvision.transforms.functional import resize

from ..losses.reliable import global_sum, mean_over_global_selection, softmax_entropy
from ..models import SourceModel
from ..models.keyed_dropout import keyed_uniform, sample_keys
from ..tasks.optim import Optim
from .eata import official_optim
from .tent import Tent

PATCH_DRAWS = 1 << 20  # the keyed-random "layer" of the patch permutations (dropout layers count from 0)


def shuffle_patches(images: torch.Tensor, grid: int, keys: torch.Tensor) -> torch.Tensor:
    """``images (B, C, H, W)`` cut into ``grid x grid`` patches, the patches of each image permuted by the
    argsort of uniforms keyed by ``keys (B,)`` (see ``sample_keys``: run seed, step, global sample index), so
    an image's shuffle does not depend on the batch or the process count. An image whose sides are not
    multiples of ``grid`` is resized to the nearest lower multiples first and back after (as officially)."""
    b, c, h, w = images.shape
    th, tw = (h // grid) * grid, (w // grid) * grid
    x = images if (th, tw) == (h, w) else resize(images, [th, tw], antialias=True)
    ph, pw = th // grid, tw // grid
    patches = x.reshape(b, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, grid * grid, c, ph, pw)
    order = keyed_uniform(keys, (grid * grid,), PATCH_DRAWS).argsort(dim=1).to(images.device)
    patches = patches[torch.arange(b, device=images.device)[:, None], order]
    x = patches.reshape(b, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, th, tw)
    return x if (th, tw) == (h, w) else resize(x, [h, w], antialias=True)


def plpd(probs: torch.Tensor, shuffled_probs: torch.Tensor) -> torch.Tensor:
    """``(B,)`` pseudo-label probability difference: ``p(y_hat | x) - p(y_hat | x')``, ``y_hat`` the argmax
    of ``probs (B, C)`` on the original images, ``shuffled_probs`` on the shuffled ones (Eq. 7)."""
    label = probs.argmax(dim=1, keepdim=True)
    return (probs.gather(1, label) - shuffled_probs.gather(1, label)).squeeze(1)


def deyo_weights(entropies: torch.Tensor, differences: torch.Tensor, weight_margin: float,
                 reweight_entropy: bool = True, reweight_plpd: bool = True) -> torch.Tensor:
    """The sample weights of Eq. 10 (no gradient): ``exp(E0 - H) + exp(PLPD)``, either term off by its flag;
    both off: 1 (the official code then takes the plain mean)."""
    h, d = entropies.detach(), differences.detach()
    if not (reweight_entropy or reweight_plpd):
        return torch.ones_like(h)
    return float(reweight_entropy) * torch.exp(weight_margin - h) + float(reweight_plpd) * torch.exp(d)


class DeYO(Tent):
    """Only the scale and shift of the normalisation layers train (BatchNorm with each batch's statistics,
    LayerNorm, GroupNorm: ``Tent``'s choice), on

        L = sum_{S} (exp(E0 - H(x)) + exp(PLPD(x))) H(x) / |S|,
        S = {x : H(x) < tau_ent and PLPD(x) > tau_PLPD},

    over the GLOBAL batch; the weight has no gradient. PLPD (``plpd``) compares the prediction of an image
    with that of its patch-shuffled copy (``shuffle_patches``); the shuffled copies of the entropy-selected
    samples are passed together in one forward without gradient (their BatchNorm statistics are theirs, as
    officially). A batch with nothing selected takes no step (as officially).

    Predictions: the batch is predicted by the forward whose loss the step then minimises, before the update
    (predicted while adapting, the official ``forward_and_adapt_deyo``).

    Args:
        source, evaluate_source: see ``Adaptation``.
        optim: default DeYO's ImageNet-C SGD (lr 0.00025, batch 64, momentum 0.9, constant); the
            test-time-adaptation framework's CIFAR-10-C setting is Adam, lr 1e-3, batch 200.
        entropy_margin: tau_ent as a fraction of ln C (official ``deyo_margin`` 0.5).
        weight_margin: E0 of the entropy weight as a fraction of ln C (official ``deyo_margin_e0`` 0.4).
        plpd_threshold: tau_PLPD (official argument default 0.2; its ImageNet-C ResNet-50-BN script: 0.3).
        patch_grid: patches per side of the shuffle (official ``patch_len`` 4: a 4 x 4 grid).
        filter_entropy: select by entropy (official ``filter_ent`` 1).
        filter_plpd: select by PLPD (official ``filter_plpd`` 1).
        reweight_entropy: the ``exp(E0 - H)`` weight (official ``reweight_ent`` 1).
        reweight_plpd: the ``exp(PLPD)`` weight (official ``reweight_plpd`` 1).
    """

    tasks = ("classification",)

    def __init__(self, source: SourceModel, optim: Optim | None = None, entropy_margin: float = 0.5,
                 weight_margin: float = 0.4, plpd_threshold: float = 0.2, patch_grid: int = 4,
                 filter_entropy: bool = True, filter_plpd: bool = True, reweight_entropy: bool = True,
                 reweight_plpd: bool = True, evaluate_source: bool = True):
        super().__init__(source, optim or official_optim(), evaluate_source=evaluate_source)
        for name, value, ok, expected in (
            ("entropy_margin", entropy_margin, 0 < entropy_margin <= 1, "a fraction of ln C in (0, 1]"),
            ("weight_margin", weight_margin, 0 < weight_margin <= 1, "a fraction of ln C in (0, 1]"),
            ("plpd_threshold", plpd_threshold, -1 <= plpd_threshold < 1,
             "a probability difference in [-1, 1)"),
            ("patch_grid", patch_grid, patch_grid >= 2, "patches per side >= 2"),
        ):
            if not ok:
                raise ValueError(f"model.{name}: expected {expected}, got {value}")
        size = self.artifact.input.size
        if patch_grid > size:
            raise ValueError(f"model.patch_grid: expected at most the image side ({size}) patches per side, "
                             f"got {patch_grid}")
        log_c = math.log(self.num_classes)
        self.margin = entropy_margin * log_c if filter_entropy else math.inf
        self.weight_margin = weight_margin * log_c
        self.plpd_threshold = plpd_threshold if filter_plpd else -math.inf
        self.patch_grid = patch_grid
        self.reweight_entropy = reweight_entropy
        self.reweight_plpd = reweight_plpd

    def shuffled(self, batch: dict, rows: torch.Tensor) -> torch.Tensor:
        """The patch-shuffled copies of the images at ``rows``, keyed by (run seed, step, sample index)."""
        keys = sample_keys(batch["index"][rows], int(os.environ.get("PL_GLOBAL_SEED", 0)), self.global_step)
        return shuffle_patches(batch["image"][rows], self.patch_grid, keys)

    def adapt_step(self, batch: dict) -> tuple[torch.Tensor | None, tuple]:
        """Predicted while adapting (see the class). A stream's unscored padding copy (weight 0) is never
        selected."""
        images = batch["image"]
        keep = batch["weight"] > 0 if self.stream is not None else torch.ones(len(images), dtype=torch.bool,
                                                                              device=images.device)
        outputs = self(images, batch["index"])
        _, logits = outputs
        entropies = softmax_entropy(logits)
        first = (entropies.detach() < self.margin) & keep
        total = max(int(global_sum(keep.sum())), 1)
        reliable = int(global_sum(first.sum()))
        self.log("train/reliable", reliable / total)
        if not reliable:  # every process sees the same global count: no forward, no step
            self.log("train/selected", 0.0)
            return None, outputs
        rows = first.nonzero().squeeze(1)
        probs = logits.detach().float().softmax(dim=1)
        with torch.no_grad():  # every process passes its share (maybe empty): global BatchNorm statistics
            shuffled_probs = self(self.shuffled(batch, rows))[1].float().softmax(dim=1)
        differences = torch.full_like(entropies.detach(), -math.inf)
        differences[rows] = plpd(probs[rows], shuffled_probs)
        selected = first & (differences > self.plpd_threshold)
        count = int(global_sum(selected.sum()))
        self.log("train/selected", count / total)
        if not count:
            return None, outputs
        weights = deyo_weights(entropies, differences.clamp_min(-1.0), self.weight_margin,
                               self.reweight_entropy, self.reweight_plpd)
        loss = mean_over_global_selection(weights * entropies, selected, count)
        self.log("train/loss", loss, prog_bar=True)
        return loss, outputs
