"""YELL fog: REAL IMAGES, SYNTHETIC FOG. NEON aerial RGB tree crowns (the YELL crops of the
``deepforest==2.1.0`` wheel) under fog rendered by the atmospheric scattering model, in the manner of
Foggy Cityscapes (Sakaridis et al., 2018: synthetic fog on real photographs). Name it so wherever a
number from it is reported.

Fog: ``I(x) = J(x) t(x) + A (1 - t(x))``, ``t(x) = exp(-beta d(x))``, with ``J`` the real image scaled to
[0, 1] (its stored 8-bit sRGB values taken as radiance, with no gamma decoding: not linear, but close
enough for a haze model), ``A`` a grey atmospheric light and ``d`` a relative depth of mean
about 1: an aerial nadir view sees every crown at nearly one distance, so ``d`` is constant but for a
ramp from top to bottom (``1 -/+ ramp / 2``: haze thickening across the scene) times a low-frequency
density variation ``1 + variation * n(x)`` (``n``: seeded smooth noise in [-1, 1], correlation length
``scale`` pixels). Defaults (``Fog()``): beta 0.9, A 0.88, ramp 0.6, variation 0.3, scale 256:
heavy fog (mean transmission 0.41 on both crops; t from 0.24 to 0.62) with crowns still visible
(``docs/assets/yell_fog.png``, ``benchmarks/yell_fog_figure.py``). The same parameters and seed write
byte-identical images.

Parts (``demo://yell_fog/<part>.json``, COCO, one image each, the boxes of the wheel's VOC files):

- ``clean_train``: crop 2 (2019_YELL_2_528000_4978000, 2299x2472, 574 crowns) as shipped: the source.
- ``fog_train``: crop 2 under fog (seed 29): the target TRAIN split, the same scenes as the source (as
  Foggy Cityscapes' train split is Cityscapes' train images fogged); its boxes stay in the file for
  reporting only (a target-role datamodule hides them).
- ``fog_test``: crop 1 (2019_YELL_2_541000_4977000, 1249x1035, 279 crowns) under fog (seed 290): the
  target TEST split, a scene the source never saw.
- ``clean_test``: crop 1 as shipped, for the diagnostic row "source-only on clean crop 1" that
  separates the scene shift from the fog shift.

Written once under ``<root>/yell_fog/<part>/`` (``image.png``, ``annotations.json``) and kept.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..boxes import read_voc
from ..checks import check_interval
from ..fetch import register_generated, resolve, write_json

WHEEL = "pypi://deepforest==2.1.0/deepforest/data/"
CROPS = {"train": "2019_YELL_2_528000_4978000_image_crop2", "test": "2019_YELL_2_541000_4977000_image_crop"}
SEEDS = {"train": 29, "test": 290}
DOMAINS = ("clean", "fog")
NAME = "REAL IMAGES, SYNTHETIC FOG"


@dataclass(frozen=True)
class Fog:
    """Fog parameters (see the module docstring); out-of-range values are refused naming ``fog.<field>``.

    Attributes:
        beta: attenuation coefficient per unit of relative depth, in (0, 10].
        airlight: grey atmospheric light ``A``, in (0, 1].
        ramp: depth grows from ``1 - ramp/2`` (top row) to ``1 + ramp/2`` (bottom row), in [0, 2).
        variation: relative amplitude of the smooth density noise, in [0, 1).
        scale: the noise's correlation length in pixels, in [8, 4096].
        seed: seed of the noise, an integer >= 0.
    """

    beta: float = 0.9
    airlight: float = 0.88
    ramp: float = 0.6
    variation: float = 0.3
    scale: int = 256
    seed: int = 0

    def __post_init__(self):
        check_interval("fog.beta", self.beta, 0, 10, open_low=True)
        check_interval("fog.airlight", self.airlight, 0, 1, open_low=True)
        check_interval("fog.ramp", self.ramp, 0, 2, open_high=True)
        check_interval("fog.variation", self.variation, 0, 1, open_high=True)
        for name, low, high in (("scale", 8, 4096), ("seed", 0, 2**63 - 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"fog.{name}: expected an integer in [{low}, {high}], got {value!r}")


def smooth_noise(height: int, width: int, scale: int, seed: int) -> np.ndarray:
    """``(height, width)`` seeded low-frequency noise in [-1, 1]: a grid of normals every ``scale`` pixels,
    upsampled bicubically."""
    rows, cols = math.ceil(height / scale) + 3, math.ceil(width / scale) + 3
    grid = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    fine = np.asarray(Image.fromarray(grid, mode="F").resize((cols * scale, rows * scale), Image.BICUBIC))
    field = fine[scale : scale + height, scale : scale + width].astype(np.float64)
    return field / max(np.abs(field).max(), 1e-12)


def depth(height: int, width: int, fog: Fog) -> np.ndarray:
    """``(height, width)`` relative depth ``d``: the top-to-bottom ramp times the density variation."""
    ramp = 1 + fog.ramp * (np.linspace(0, 1, height)[:, None] - 0.5)
    return ramp * (1 + fog.variation * smooth_noise(height, width, fog.scale, fog.seed))


def transmission(height: int, width: int, fog: Fog) -> np.ndarray:
    """``(height, width)`` transmission ``t = exp(-beta d)`` in (0, 1]."""
    return np.exp(-fog.beta * depth(height, width, fog))


def add_fog(image: np.ndarray, fog: Fog, t: np.ndarray | None = None) -> np.ndarray:
    """``(H, W, 3) uint8`` image under fog: ``I = J t + A (1 - t)`` with ``J = image / 255``, rounded to
    uint8; ``t`` ``(H, W)`` defaults to ``transmission(H, W, fog)``."""
    t = transmission(*image.shape[:2], fog) if t is None else t
    foggy = image / 255.0 * t[..., None] + fog.airlight * (1 - t[..., None])
    return np.clip(np.rint(foggy * 255), 0, 255).astype(np.uint8)


def coco_of(record, file_name: str, size: tuple[int, int], description: str) -> dict:
    """A COCO detection payload of one VOC ``record`` (one image ``file_name`` of ``size`` (w, h))."""
    names = sorted(set(record.labels))
    annotations = [
        {"id": n, "image_id": 0, "category_id": names.index(label) + 1, "iscrowd": 0,
         "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "area": float((x1 - x0) * (y1 - y0))}
        for n, ((x0, y0, x1, y1), label) in enumerate(zip(record.boxes, record.labels, strict=True))
    ]
    return {
        "info": {"description": description},
        "images": [{"id": 0, "file_name": file_name, "width": size[0], "height": size[1]}],
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(names)],
    }


def generate(root: Path, domain: str, split: str, fog: Fog | None = None, wheel_root: Path | None = None
             ) -> Path:
    """Write part ``<domain>_<split>`` (``image.png`` and COCO ``annotations.json``) under
    ``root/yell_fog/``; the wheel's crops are fetched into ``wheel_root`` (default ``root``); ``fog``
    defaults to ``Fog(seed=SEEDS[split])``. Returns the JSON's path."""
    if domain not in DOMAINS or split not in CROPS:
        raise ValueError(
            f"yell_fog: unknown part {domain}_{split}; expected one of "
            f"{[f'{d}_{s}' for d in DOMAINS for s in CROPS]}"
        )
    fog = Fog(seed=SEEDS[split]) if fog is None else fog
    wheel_root = Path(root if wheel_root is None else wheel_root)
    xml = resolve(WHEEL + CROPS[split] + ".xml", wheel_root)
    png = resolve(WHEEL + CROPS[split] + ".png", wheel_root)
    (record,) = read_voc(str(xml))
    folder = Path(root) / "yell_fog" / f"{domain}_{split}"
    folder.mkdir(parents=True, exist_ok=True)
    if domain == "clean":
        shutil.copyfile(png, folder / "image.png")
        size, description = Image.open(png).size, f"{CROPS[split]} as shipped (no fog), {NAME} benchmark"
    else:
        image = add_fog(np.asarray(Image.open(png).convert("RGB")), fog)
        Image.fromarray(image).save(folder / "image.png")
        size = image.shape[1], image.shape[0]
        description = f"{NAME}: {CROPS[split]} under fog {asdict(fog)}"
    return write_json(folder / "annotations.json", coco_of(record, "image.png", size, description))


register_generated("yell_fog", "demo://yell_fog/<clean_train|fog_train|fog_test|clean_test>.json", generate)
