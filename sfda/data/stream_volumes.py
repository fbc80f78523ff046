"""A medical stream: the 2-D slices of MR volumes under MR scanner artifacts, one artifact after another
(``ArtifactVolumes``, a ``StreamSource`` for ``StreamDataModule``), to adapt a 2-D segmentation model online.

Each domain is every slice of the datalist's volumes under one artifact at one severity. An artifact is
applied to the whole preprocessed volume (as a scanner produces it, over the acquisition) with one random
draw per (artifact, volume), scaled by the severity (so severities are ordered); the volume is then mapped
to [0, 1] again with the spec's intensity percentiles (what the preprocessing of a scan that has the artifact
gives). The artifacts are MONAI's (``monai.transforms``), with these parameters per severity 1-5
(``ARTIFACTS``; chosen here, no published table exists for them):

- ``bias_field``: a smooth multiplicative field ``exp(p(x))``, ``p`` a degree-3 polynomial over the volume
  whose coefficients are uniform in ``[-c, c]``, c = 0.1, 0.2, 0.3, 0.4, 0.5 (TorchIO's default is 0.5).
- ``gibbs``: Gibbs ringing, k-space truncated by ``GibbsNoise(alpha)``, alpha = 0.8, 0.85, 0.9, 0.93, 0.96.
- ``rician``: Rician noise (the magnitude of complex Gaussian noise), standard deviation 0.05, 0.10, 0.15,
  0.20, 0.25 of the [0, 1] intensity range.
- ``kspace_spikes``: 3 spikes at random k-space positions away from the centre, each of magnitude r times the
  largest k-space magnitude (the centre's), r = 0.1, 0.25, 0.5, 0.75, 1.0: a herringbone pattern.

Measured for the Colin27 source UNet (``recipes/segmentation/colin27_itk/source.yaml``) on the ITK head (Dice
0.916 without artifact), severities 1 to 5: bias field 0.916, 0.912, 0.899, 0.863, 0.774; Gibbs 0.912, 0.874,
0.801, 0.754, 0.705; Rician 0.906, 0.851, 0.724, 0.549, 0.419; spikes 0.919, 0.917, 0.867, 0.783, 0.589.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

from .segmentation import pad_in_plane
from .stream import StreamSource
from .volumes import DatalistError, Volume, VolumeSpec, load_volume, read_datalist

ARTIFACTS = {  # name -> its parameter at severities 1..5 (see the module docstring)
    "bias_field": (0.1, 0.2, 0.3, 0.4, 0.5),
    "gibbs": (0.8, 0.85, 0.9, 0.93, 0.96),
    "rician": (0.05, 0.10, 0.15, 0.20, 0.25),
    "kspace_spikes": (0.1, 0.25, 0.5, 0.75, 1.0),
}
SPIKES = 3
ARTIFACT_SEED = 20_240_117


def check_artifact(name: str, severity: int, field_name: str = "data.source.artifacts") -> None:
    if name not in ARTIFACTS:
        raise ValueError(f"{field_name}: unknown MR artifact {name!r}, expected one of {list(ARTIFACTS)}")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"data.severities: expected severities in 1-5, got {severity!r}")


def scanner_artifact(image: torch.Tensor, name: str, severity: int, seed: int) -> torch.Tensor:
    """``image (C, *spatial)`` float in [0, 1] under artifact ``name`` at ``severity`` (see the module
    docstring), drawn from ``seed``; float32, same shape, not yet rescaled."""
    from monai.transforms import GibbsNoise, KSpaceSpikeNoise, RandBiasField, RandRicianNoise

    check_artifact(name, severity)
    level = ARTIFACTS[name][severity - 1]
    rng = np.random.default_rng(seed)
    if name == "bias_field":
        transform = RandBiasField(degree=3, coeff_range=(-level, level), prob=1.0)
        transform.set_random_state(int(rng.integers(2**31)))
        out = transform(image)
    elif name == "gibbs":
        out = GibbsNoise(alpha=level)(image)
    elif name == "rician":
        transform = RandRicianNoise(prob=1.0, std=level, sample_std=False)
        transform.set_random_state(int(rng.integers(2**31)))
        out = transform(image)
    else:
        spatial = image.shape[1:]
        # spikes away from the centre of k-space (its low frequencies carry the image itself)
        spots = [tuple(int(rng.integers(s // 8, s // 2 - 1)) * int(rng.choice([-1, 1])) + s // 2
                       for s in spatial) for _ in range(SPIKES)]
        out = image
        for channel in range(image.shape[0]):  # a spike's log magnitude: the centre's plus log(r)
            centre = float(torch.log(torch.fft.fftn(image[channel].double()).abs().max()))
            for spot in spots:
                out = KSpaceSpikeNoise(loc=(channel, *spot), k_intensity=centre + math.log(level))(out)
    out = out.as_tensor() if hasattr(out, "as_tensor") else torch.as_tensor(out)
    return out.float().contiguous()


def rescaled(image: torch.Tensor, spec: VolumeSpec) -> torch.Tensor:
    """``image`` with its ``spec.intensity_percentiles`` mapped to [0, 1], clipped (the preprocessing's
    scaling, applied again after an artifact)."""
    low, high = np.percentile(image.numpy(), spec.intensity_percentiles)
    return ((image - float(low)) / max(float(high - low), 1e-8)).clamp(0.0, 1.0)


@dataclass
class VolumeDomain:
    """One shift of a medical stream: every slice of ``source``'s volumes under ``artifact`` at ``severity``;
    the volumes are loaded and corrupted on first use (the input spec is then known)."""

    name: str
    source: ArtifactVolumes
    artifact: str
    severity: int
    _slices: tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[int, int]]] | None = field(
        default=None, repr=False)

    @property
    def labels(self) -> np.ndarray:
        raise ValueError("data.label_order: a segmentation stream's labels are masks, which a class-sorted "
                         "order cannot sort; expected 'iid'")

    def slices(self):
        """``(images [(1, X, Y, Z)], labels [(X, Y, Z)], items [(volume, slice)])``, padded in plane."""
        if self._slices is None:
            spec = self.source.spec()
            images, labels = [], []
            for k, volume in enumerate(self.source.volumes()):
                # one draw per (artifact, volume), scaled by the severity: severities are ordered
                seed = zlib.crc32(f"{ARTIFACT_SEED}:{self.artifact}:{k}".encode())
                image = rescaled(scanner_artifact(volume.image, self.artifact, self.severity, seed), spec)
                images.append(pad_in_plane(image, spec))
                labels.append(pad_in_plane(volume.label[None], spec)[0])
            axis = spec.slice_axis
            items = [(v, s) for v, image in enumerate(images) for s in range(image.shape[1 + axis])]
            self._slices = images, labels, items
        return self._slices

    def __len__(self) -> int:
        return len(self.slices()[2])

    def item(self, index: int, spec: VolumeSpec, pipeline=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Slice ``index``: ``(image (1, H, W), mask (H, W) long)``."""
        images, labels, items = self.slices()
        volume, position = items[index]
        axis = spec.slice_axis
        return (images[volume].select(1 + axis, position).contiguous(),
                labels[volume].select(axis, position).long().contiguous())


class ArtifactVolumes(StreamSource):
    """The labelled MR volumes of a datalist, sliced for a 2-D segmentation model, under MR scanner artifacts
    in sequence (see the module docstring): a ``StreamSource`` for ``StreamDataModule``.

    Args:
        datalist: datalist JSON (path or ``demo://skull_stripping/<subject>.json``); every entry of ``key``
            needs a ``label`` (labels only score).
        class_names: names of the label values 0..C-1 (0 = background).
        artifacts: the shifts in stream order (default all four: bias field, Gibbs, Rician, k-space spikes).
        key: the datalist key of the volumes.
    """

    def __init__(self, datalist: str, class_names: list[str], artifacts: list[str] | None = None,
                 key: str = "training"):
        self.artifacts = list(ARTIFACTS if artifacts is None else artifacts)
        if not self.artifacts:
            raise ValueError("data.source.artifacts: expected at least one artifact, got an empty list")
        for name in self.artifacts:
            check_artifact(name, 1)
        if len(class_names) < 2:
            raise ValueError(f"data.source.class_names: expected at least 2 names (background first), got "
                             f"{class_names}")
        self.datalist, self.class_names, self.key = datalist, list(class_names), key
        self._spec: VolumeSpec | None = None
        self._volumes: list[Volume] | None = None

    @property
    def shifts(self) -> list[str]:
        return self.artifacts

    def use_input(self, spec) -> None:
        if not isinstance(spec, VolumeSpec) or spec.mode != "2d":
            raise ValueError(f"data.input: a medical stream slices volumes for a 2-D segmentation model; "
                             f"expected a VolumeSpec with mode '2d', got {spec}")
        self._spec = spec

    def spec(self) -> VolumeSpec:
        if self._spec is None:
            raise RuntimeError("data.input is not set and no source artifact provided one")
        return self._spec

    def volumes(self) -> list[Volume]:
        """The preprocessed volumes with their labels (loaded once)."""
        if self._volumes is None:
            entries = read_datalist(self.datalist, self.key)
            unlabelled = [e["id"] for e in entries if e.get("label") is None]
            if unlabelled:
                raise DatalistError(f"{self.datalist}: an online stream scores every slice, so every "
                                    f"'{self.key}' entry needs a 'label'; missing for {unlabelled}")
            self._volumes = [load_volume(e, self.spec(), len(self.class_names)) for e in entries]
        return self._volumes

    def domain(self, artifact: str, severity: int) -> VolumeDomain:
        check_artifact(artifact, severity)
        return VolumeDomain(f"{artifact}-{severity}", self, artifact, severity)
