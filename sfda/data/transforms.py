"""Input specification of a model and the albumentations views built from it."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Literal

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations otherwise calls the network at import

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

View = Literal["test", "weak", "strong"]


@dataclass(frozen=True)
class InputSpec:
    """What a model expects as input: square ``size``, ``channels`` (1 or 3), per-channel ``mean``/``std`` on
    [0, 1] pixels."""

    size: int
    channels: int = 3
    mean: tuple[float, ...] = field(default=(0.5, 0.5, 0.5))
    std: tuple[float, ...] = field(default=(0.5, 0.5, 0.5))

    def __post_init__(self):
        if not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"input.size: expected a positive integer (pixels), got {self.size!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"input.channels: expected 1 or 3, got {self.channels}")
        for name in ("mean", "std"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) != self.channels:
                raise ValueError(f"input.{name}: expected {self.channels} values (one per channel), got "
                                 f"{values}")
            object.__setattr__(self, name, values)
        if any(v <= 0 for v in self.std):
            raise ValueError(f"input.std: expected positive values (normalisation divides by them), "
                             f"got {self.std}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> InputSpec:
        return cls(**data)


class TestView:
    """The test view (resize to ``spec.size``, normalise) of an ``H x W x C`` image: the albumentations
    pipeline ``A.Compose([A.Resize, A.Normalize])`` with the same outputs, bit for bit, at a fraction of
    its per-call cost (about 100 us an image, most of a small image's loading time). The resize is
    albumentations' own function; a uint8 image is normalised through the pipeline's own lookup table
    (read once from a 0..255 ramp), anything else goes through the pipeline itself."""

    def __init__(self, spec: InputSpec):
        self.pipeline = A.Compose([A.Resize(spec.size, spec.size),
                                   A.Normalize(mean=spec.mean, std=spec.std, max_pixel_value=255.0)])
        resize, normalise = self.pipeline.transforms
        self.shape, self.interpolation = (spec.size, spec.size), resize.interpolation
        ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], len(spec.mean), axis=2)
        self.tables = np.ascontiguousarray(normalise(image=ramp)["image"][0].T)  # (C, 256) float32

    def __call__(self, image: np.ndarray) -> dict:
        """``image`` ``(H, W, C)`` -> ``{"image": (size, size, C) float32}``, as the pipeline returns."""
        small = self.resized(image)
        if small is None:
            return self.pipeline(image=image)
        out = np.empty(small.shape, dtype=np.float32)
        for channel, table in enumerate(self.tables):
            out[..., channel] = table[small[..., channel]]
        return {"image": out}

    def resized(self, image: np.ndarray) -> np.ndarray | None:
        """``image (H, W, C)`` uint8 resized to ``(size, size, C)`` uint8, before normalisation; None for an
        image the lookup tables do not cover (not uint8, or another channel count)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != len(self.tables):
            return None
        from albumentations.augmentations.geometric.functional import resize

        return resize(image, self.shape, self.interpolation)

    def normalise(self, resized: torch.Tensor) -> torch.Tensor:
        """``(C, size, size)`` uint8 from ``resized`` -> the normalised ``(C, size, size)`` float32 input, the
        values ``__call__`` gives."""
        pixels = resized.numpy()
        if len(self.tables) == 1:  # one lookup: about 5 us for a 28x28 image
            return torch.from_numpy(self.tables[0][pixels])
        offsets = (np.arange(len(self.tables), dtype=np.intp) * 256)[:, None, None]
        return torch.from_numpy(np.take(self.tables.ravel(), pixels + offsets))


def build_view(spec: InputSpec, view: View = "test") -> A.Compose | TestView:
    """Albumentations pipeline: HxW or HxWxC uint8 -> ``(channels, size, size)`` float tensor.

    - test: resize + normalise only (``TestView``, the same pipeline without its per-call overhead).
    - weak: small affine jitter (shift 6%, scale 0.9-1.1, rotate 10 degrees).
    - strong: larger affine, brightness/contrast, blur and one erased patch.
    No flips: they change digit and text identities.
    """
    if view == "test":
        return TestView(spec)
    ops: list = [A.Resize(spec.size, spec.size)]
    if view in ("weak", "strong"):
        strength = 1.0 if view == "weak" else 2.0
        ops.append(
            A.Affine(
                scale=(1 - 0.1 * strength, 1 + 0.1 * strength),
                translate_percent=(-0.06 * strength, 0.06 * strength),
                rotate=(-10 * strength, 10 * strength),
                p=1.0,
            )
        )
    if view == "strong":
        ops += [
            A.RandomBrightnessContrast(0.4, 0.4, p=0.8),
            A.GaussianBlur(blur_limit=(3, 5), p=0.3),
            A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.2, 0.4), hole_width_range=(0.2, 0.4),
                            p=0.5),
        ]
    elif view != "weak":
        raise ValueError(f"view: expected one of 'test', 'weak', 'strong', got '{view}'")
    ops.append(A.Normalize(mean=spec.mean, std=spec.std, max_pixel_value=255.0))
    return A.Compose(ops)


def match_channels(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``image`` (HxW, HxWx1, HxWx3 or HxWx4 uint8) as ``H x W x spec.channels``: grey repeated, colour
    weighted to grey, alpha dropped."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if spec.channels == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif spec.channels == 1 and image.shape[2] == 3:
        image = np.round(image @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[:, :, None]
    return np.ascontiguousarray(image)


def prepared_input(image: np.ndarray, spec: InputSpec, pipeline) -> torch.Tensor:
    """What a test-view input is kept as: the resized ``(C, size, size)`` uint8 image, a quarter of the
    float input's bytes, where ``pipeline`` is a ``TestView`` and the image uint8; else the float input
    itself. ``model_input`` turns either into the float input."""
    image = match_channels(image, spec)
    small = pipeline.resized(image) if isinstance(pipeline, TestView) else None
    if small is not None:
        return torch.from_numpy(np.ascontiguousarray(small.transpose(2, 0, 1)))
    out = pipeline(image=image)["image"]  # an A.Compose or a TestView
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))).float()


def model_input(prepared: torch.Tensor, pipeline) -> torch.Tensor:
    """The ``(C, size, size)`` float32 input from a ``prepared_input``."""
    return pipeline.normalise(prepared) if prepared.dtype == torch.uint8 else prepared


def to_tensor(image: np.ndarray, spec: InputSpec, pipeline: A.Compose) -> torch.Tensor:
    """Match ``image`` (HxW, HxWx1, HxWx3 or HxWx4 uint8) to ``spec.channels``, apply ``pipeline``, return CHW
    float32."""
    return model_input(prepared_input(image, spec, pipeline), pipeline)


def to_pixels(image: torch.Tensor, mean, std) -> np.ndarray:
    """A normalised ``(C, H, W)`` input back to ``(H, W, 3)`` uint8 pixels (grey repeated over 3 channels)."""
    scale, shift = torch.tensor(std)[:, None, None], torch.tensor(mean)[:, None, None]
    pixels = image.detach().cpu().float() * scale + shift
    pixels = pixels.clamp(0, 1).expand(3, -1, -1) if pixels.shape[0] == 1 else pixels.clamp(0, 1)
    return (pixels.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
