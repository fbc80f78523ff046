"""The 15 ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019), deterministic per seed.

``corrupt(image, name, severity, rng, table)`` turns one uint8 image, (H, W) grey or (H, W, 3) RGB, into
its corrupted copy of the same shape and dtype. Two parameter tables are kept, read from the reference
generators of github.com/hendrycks/robustness (``ImageNet-C/create_c/``): ``"cifar"`` from
``make_cifar_c.py`` (made for 32-px images: the CIFAR-10-C constants) and ``"imagenet"`` from
``make_imagenet_c.py`` (224 px). All randomness is drawn from the ``rng`` argument (a numpy Generator),
never from numpy's global state, so a sample's corruption is reproducible from its seed in any process.

Like the reference, the result is computed in floating point on [0, 1] or [0, 255] and cut to uint8 by
truncation (``np.uint8`` of the float). A grey image is corrupted as 3 equal channels and returned as the
mean of the 3 corrupted channels. Every deviation from the reference code, and why, is listed in
``docs/methods/corruptions.md``.
"""

from __future__ import annotations

import difflib
import functools
import io
import math
from collections.abc import Callable
from typing import Literal

import numpy as np
from PIL import Image
from scipy import ndimage, signal
from skimage import color

from .fetch import resolve

CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression",
)
SEVERITIES = (1, 2, 3, 4, 5)
Table = Literal["cifar", "imagenet"]
TABLES: tuple[str, ...] = ("cifar", "imagenet")
MIN_SIDE = 8  # smallest image side accepted (the elastic affine needs 3 distinct reference points)

# The parameter of each corruption at severities 1..5, as in make_cifar_c.py / make_imagenet_c.py.
PARAMETERS: dict[str, dict[str, tuple]] = {
    "cifar": {
        "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # std of the additive noise on [0, 1]
        "shot_noise": (500, 250, 100, 75, 50),  # photon count of a white pixel (Poisson rate)
        "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # salt-and-pepper fraction of the values
        "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),  # disk radius, alias
        "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),  # sigma, d, it
        "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),  # radius, sigma
        "zoom_blur": ((1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)),  # arange(1, ..)
        # loc, scale, zoom, threshold, blur radius, blur sigma, image blend
        "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                 (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                 (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
        "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),  # image, frost weight
        "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),  # fog strength, fractal decay
        "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to HSV value
        "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor on the deviation from the channel mean
        # alpha, sigma, affine: fractions of ELASTIC_SCALE (the reference's IMSIZE)
        "elastic_transform": ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                              (0.1, 0.03, 0.03)),
        "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # side factor of the box-downsampled image
        "jpeg_compression": (80, 65, 58, 50, 40),  # JPEG quality
    },
    "imagenet": {
        "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
        "shot_noise": (60, 25, 12, 5, 3),
        "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
        "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
        "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
        "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
        "zoom_blur": ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)),
        "snow": ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                 (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                 (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)),
        "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
        "fog": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
        "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
        "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
        "elastic_transform": ((2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02),
                              (0.12, 0.01, 0.02)),
        "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
        "jpeg_compression": (25, 18, 15, 10, 7),
    },
}
# the reference's IMSIZE of the elastic table: 32 for CIFAR, 244 (sic, "should have been 224") for ImageNet
ELASTIC_SCALE = {"cifar": 32, "imagenet": 244}
# make_cifar_c.py shrinks the frost textures by 0.2 (cv2.resize fx=fy=0.2) before cropping 32 px
FROST_TEXTURE_SCALE = {"cifar": 0.2, "imagenet": 1.0}
# the reference draws np.random.randint(5) among its 6 files: frost6.jpg is never used, nor here
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
FROST_URI = "pypi://corrupt-tta==0.1.7/corrupt_tta/assets/frost/{}"


# ---------------------------------------------------------------------------------------------- checks


def _check_name(name: object, field: str) -> None:
    if not isinstance(name, str) or name not in CORRUPTIONS:
        close = difflib.get_close_matches(name, CORRUPTIONS, n=1) if isinstance(name, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{field}: unknown corruption {name!r}{hint}; expected one of: "
                         f"{', '.join(CORRUPTIONS)}")


def _check_severity(severity: object, field: str) -> None:
    if isinstance(severity, bool) or not isinstance(severity, int | np.integer) or severity not in SEVERITIES:
        raise ValueError(f"{field}: severity {severity!r} is not valid; expected an integer in 1-5 "
                         f"({', '.join(map(str, SEVERITIES))})")


def check_corruption(name: str, severity: int, field: str) -> None:
    """Raise ValueError naming `field`, the bad value and the expected ones (the 15 names; 1-5)."""
    _check_name(name, field)
    _check_severity(severity, field)


def _check_image(image: object) -> None:
    ok = (isinstance(image, np.ndarray) and image.dtype == np.uint8
          and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3))
          and min(image.shape[:2]) >= MIN_SIDE)
    if not ok:
        got = (f"a {image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray)
               else f"a {type(image).__name__}")
        raise ValueError(f"image: expected a uint8 array of shape (H, W) or (H, W, 3) with H, W >= "
                         f"{MIN_SIDE}; got {got}")


# ---------------------------------------------------------------------------------------------- entry


def corrupt(image: np.ndarray, name: str, severity: int, rng: np.random.Generator,
            table: Table = "cifar") -> np.ndarray:
    """image: (H, W) or (H, W, 3) uint8 -> corrupted image of the same shape and dtype uint8.
    Grey images are corrupted as 3 equal channels and returned as grey (mean of the channels)."""
    _check_name(name, "name")
    _check_severity(severity, "severity")
    if table not in TABLES:
        raise ValueError(f"table: unknown parameter table {table!r}; expected one of: {', '.join(TABLES)}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    _check_image(image)
    grey = image.ndim == 2
    rgb = np.repeat(image[:, :, None], 3, axis=2) if grey else np.ascontiguousarray(image)
    param = PARAMETERS[table][name][int(severity) - 1]
    out = np.asarray(_FUNCTIONS[name](rgb, param, rng, table), dtype=np.float64)  # (H, W, 3) on [0, 255]
    if grey:
        out = out.mean(axis=2)
    return np.clip(out, 0, 255).astype(np.uint8)  # truncation, as the reference's np.uint8


# ---------------------------------------------------------------------------------------------- helpers


def _unit(x: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float64 on [0, 1]."""
    return x / 255.0


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """skimage.filters.gaussian(x, sigma, channel_axis=-1) of (H, W, 3): edge mode 'nearest', truncate 4."""
    return ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0), mode="nearest", truncate=4.0)


def _gaussian_field(field: np.ndarray, sigma: float) -> np.ndarray:
    """skimage.filters.gaussian(field, sigma, mode='reflect', truncate=3) of (H, W); for wide kernels (the
    ImageNet table's sigma of 171 px) as FFT convolutions of the mirrored field, equal to 1e-15."""
    radius = int(3 * sigma + 0.5)
    if radius < 32:
        return ndimage.gaussian_filter(field, sigma, mode="reflect", truncate=3)
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * taps**2 / sigma**2)
    kernel /= kernel.sum()
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)  # numpy 'symmetric' = scipy 'reflect', repeated past the field's side
        field = signal.fftconvolve(np.pad(field, pad, mode="symmetric"), np.expand_dims(kernel, 1 - axis),
                                   mode="valid")
    return field


def _correlate(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """cv2.filter2D of each channel of (H, W, C) with an odd (k, k) kernel, border reflect-101."""
    if max(kernel.shape) <= 9:
        return ndimage.correlate(x, kernel[:, :, None], mode="mirror")
    ph, pw = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(x, ((ph, ph), (pw, pw), (0, 0)), mode="reflect")  # numpy 'reflect' = reflect-101
    return signal.fftconvolve(padded, kernel[::-1, ::-1, None], mode="valid", axes=(0, 1))


@functools.lru_cache(maxsize=32)
def _disk(radius: float, alias_blur: float) -> np.ndarray:
    """The reference's anti-aliased disk: (k, k) float, sum 1, cropped to its non-zero support.

    Built in float32 like the reference (a float32 disk smoothed by cv2.GaussianBlur): the weights of a
    flat disk are then float32(1 / n), whose rounding decides where truncated outputs land."""
    grid = np.arange(-8, 8 + 1) if radius <= 8 else np.arange(-radius, radius + 1)
    ksize = 3 if radius <= 8 else 5
    y, x = np.meshgrid(grid, grid, indexing="ij")
    disk = ((x**2 + y**2) <= radius**2).astype(np.float32)
    disk /= disk.sum()
    taps = np.arange(ksize) - ksize // 2  # cv2.GaussianBlur(disk, (ksize, ksize), alias_blur), reflect-101
    weights = np.exp(-(taps**2) / (2 * alias_blur**2))
    weights = (weights / weights.sum()).astype(np.float32)
    kernel = ndimage.correlate1d(ndimage.correlate1d(disk, weights, axis=0, mode="mirror"),
                                 weights, axis=1, mode="mirror").astype(np.float64)
    rows, cols = np.nonzero(kernel.any(axis=1))[0], np.nonzero(kernel.any(axis=0))[0]
    kernel = kernel[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # exact zeros off the blurred disk
    kernel.setflags(write=False)
    return kernel


def _clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Zoom the centre of (H, W, C) by `factor` (>= 1, bilinear) and crop back to (H, W, C)."""
    h, w = x.shape[:2]
    ch, cw = math.ceil(h / factor), math.ceil(w / factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    zoomed = ndimage.zoom(x[top:top + ch, left:left + cw], (factor, factor, 1), order=1)
    trim_top, trim_left = (zoomed.shape[0] - h) // 2, (zoomed.shape[1] - w) // 2
    return zoomed[trim_top:trim_top + h, trim_left:trim_left + w]


def _zoom_axis(n: int, factor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One axis of `_clipped_zoom` as linear interpolation: output i = (1 - frac) * input[low] + frac *
    input[high], all (n,). The centre ceil(n / factor) samples are resized to round(crop * factor) as
    scipy.ndimage.zoom(order=1) does (output o samples o * (crop - 1) / (out - 1)); the centre n are kept."""
    crop = math.ceil(n / factor)
    size = round(crop * factor)
    start, trim = (n - crop) // 2, (size - n) // 2
    pos = np.arange(trim, trim + n) * ((crop - 1) / (size - 1) if size > 1 else 0.0)
    low = np.minimum(np.floor(pos).astype(np.int64), crop - 1)
    return start + low, start + np.minimum(low + 1, crop - 1), pos - low


@functools.lru_cache(maxsize=32)
def _zoom_operators(h: int, w: int, stop: float, step: float) -> tuple[tuple[np.ndarray, ...], ...]:
    """`_zoom_axis` of the rows and the columns for every factor of np.arange(1, stop, step), stacked:
    (low, high, frac) of shape (n, h) and of shape (n, w)."""
    factors = np.arange(1, stop, step)
    rows = tuple(np.stack(parts) for parts in zip(*(_zoom_axis(h, f) for f in factors), strict=True))
    cols = tuple(np.stack(parts) for parts in zip(*(_zoom_axis(w, f) for f in factors), strict=True))
    for array in (*rows, *cols):
        array.setflags(write=False)
    return rows, cols


def _motion_blur_taps(radius: float, sigma: float, angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ImageMagick's MotionBlurImage kernel: weights (n,) and integer offsets dy, dx (n,), n = 2*ceil(r)+1.

    A one-sided half Gaussian along `angle` (degrees, y down): the output at (y, x) is
    sum_i w_i * image[y + dy_i, x + dx_i], with w_i ~ exp(-i^2 / (2 sigma^2)) and the offsets rounded
    half down, as MagickCore/effect.c does."""
    width = int(2 * math.ceil(radius) + 1)
    taps = np.arange(width, dtype=np.float64)
    weights = np.exp(-(taps**2) / (2 * sigma**2))
    weights /= weights.sum()
    point_x, point_y = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
    length = math.hypot(point_x, point_y)
    dx = np.ceil(taps * point_y / length - 0.5).astype(np.int64)
    dy = np.ceil(taps * point_x / length - 0.5).astype(np.int64)
    return weights, dy, dx


def _motion_blur(x: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """Line blur of (H, W, C) float with edge-replicated borders (ImageMagick's default virtual pixels)."""
    weights, dy, dx = _motion_blur_taps(radius, sigma, angle)
    h, w = x.shape[:2]
    pad = int(max(np.abs(dy).max(), np.abs(dx).max()))
    padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    out = np.zeros(x.shape, dtype=np.float64)
    for weight, oy, ox in zip(weights, dy, dx, strict=True):
        out += weight * padded[pad + oy:pad + oy + h, pad + ox:pad + ox + w]
    return out


def _plasma_fractal(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square height map, (size, size) on [0, 1], size a power of two, wrapping at the edges."""
    grid = np.zeros((size, size))
    step, wibble = size, 100.0

    def noisy_mean(total: np.ndarray) -> np.ndarray:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = grid[0:size:step, 0:size:step]
        square = corners + np.roll(corners, -1, axis=0)
        square = square + np.roll(square, -1, axis=1)
        grid[half:size:step, half:size:step] = noisy_mean(square)  # centres of the squares
        centres = grid[half:size:step, half:size:step]
        across = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        grid[0:size:step, half:size:step] = noisy_mean(across)  # diamonds on the corner rows
        down = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        grid[half:size:step, 0:size:step] = noisy_mean(down)  # diamonds on the corner columns
        step = half
        wibble /= decay
    grid -= grid.min()
    return grid / grid.max()


def _resize_linear(x: np.ndarray, out_h: int, out_w: int, scale_y: float, scale_x: float) -> np.ndarray:
    """cv2.resize INTER_LINEAR of (H, W, C) uint8 (no antialiasing): output pixel i samples the input at
    (i + 0.5) * scale - 0.5, clamped to the image; rounded back to uint8."""

    def axis(n_in: int, n_out: int, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out) + 0.5) * scale - 0.5, 0, n_in - 1)
        low = np.floor(pos).astype(np.int64)
        return low, np.minimum(low + 1, n_in - 1), pos - low

    y0, y1, fy = axis(x.shape[0], out_h, scale_y)
    x0, x1, fx = axis(x.shape[1], out_w, scale_x)
    f = x.astype(np.float64)
    rows = f[y0] * (1 - fy)[:, None, None] + f[y1] * fy[:, None, None]
    out = rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=16)
def _frost_texture(index: int, scale: float) -> np.ndarray:
    """Frost texture `index` (0-4) as RGB uint8 (h, w, 3), alpha dropped, shrunk by `scale` like the
    reference's cv2.resize(frost, (0, 0), fx=scale, fy=scale)."""
    with Image.open(resolve(FROST_URI.format(FROST_FILES[index]))) as img:
        texture = np.asarray(img.convert("RGB"))
    if scale != 1.0:
        h, w = texture.shape[:2]
        texture = _resize_linear(texture, round(h * scale), round(w * scale), 1 / scale, 1 / scale)
    texture.setflags(write=False)
    return texture


# ---------------------------------------------------------------------------------------------- corruptions
# Each takes x: (H, W, 3) uint8, the severity's parameter, the rng and the table; returns (H, W, 3) on
# [0, 255] (float, cut to uint8 by `corrupt`).


def _gaussian_noise(x, sigma, rng, table):
    return np.clip(_unit(x) + rng.normal(size=x.shape, scale=sigma), 0, 1) * 255


def _shot_noise(x, rate, rng, table):
    return np.clip(rng.poisson(_unit(x) * rate) / rate, 0, 1) * 255


def _impulse_noise(x, amount, rng, table):
    # skimage.util.random_noise(mode='s&p', amount, salt_vs_pepper=0.5): each value is hit with
    # probability `amount`, then set to 1 or 0 with equal chance
    hit = rng.random(x.shape) <= amount
    salt = rng.random(x.shape) <= 0.5
    return np.where(hit, np.where(salt, 1.0, 0.0), _unit(x)) * 255


def _defocus_blur(x, param, rng, table):
    return np.clip(_correlate(_unit(x), _disk(*param)), 0, 1) * 255


def _glass_blur(x, param, rng, table):
    sigma, delta, iterations = param
    blurred = (_gaussian(_unit(x), sigma) * 255).astype(np.uint8)
    h, w = x.shape[:2]
    # The reference walks rows h-delta..delta+1 and columns w-delta..delta+1 (both descending) and does
    # `x[h, w], x[h', w'] = x[h', w'], x[h, w]` on (3,)-pixel views: numpy evaluates the right side as
    # views, so the pixel at (h, w) takes (h', w')'s value and (h', w') keeps its own: a sequential copy,
    # not a swap. We replay it on an index map (exact, and one fancy-index at the end).
    rows, cols = np.arange(h - delta, delta, -1), np.arange(w - delta, delta, -1)
    dst = (rows[:, None] * w + cols[None, :]).ravel()
    source = list(range(h * w))
    for _ in range(iterations):
        offsets = rng.integers(-delta, delta, size=(dst.size, 2))  # randint(-d, d): d excluded
        src = dst + offsets[:, 1] * w + offsets[:, 0]
        for i, j in zip(dst.tolist(), src.tolist(), strict=True):
            source[i] = source[j]
    shuffled = blurred.reshape(h * w, 3)[np.asarray(source)].reshape(h, w, 3)
    return np.clip(_gaussian(shuffled / 255.0, sigma), 0, 1) * 255


def _motion_blur_corruption(x, param, rng, table):
    radius, sigma = param
    angle = rng.uniform(-45, 45)
    return np.rint(_motion_blur(x.astype(np.float64), radius, sigma, angle))  # 8-bit PNG from ImageMagick


def _zoom_blur(x, param, rng, table):
    h, w = x.shape[:2]
    (row_low, row_high, row_frac), (col_low, col_high, col_frac) = _zoom_operators(h, w, *param)
    x = _unit(x).astype(np.float32).astype(np.float64)
    # every clipped zoom at once: interpolate the rows, (n, h, w, 3), then the columns of each
    zoomed = (x[row_low] * (1 - row_frac)[:, :, None, None] + x[row_high] * row_frac[:, :, None, None])
    n = np.arange(len(row_low))[:, None, None]
    rows = np.arange(h)[None, :, None]
    zoomed = (zoomed[n, rows, col_low[:, None, :]] * (1 - col_frac)[:, None, :, None]
              + zoomed[n, rows, col_high[:, None, :]] * col_frac[:, None, :, None])
    return np.clip((x + zoomed.sum(axis=0)) / (len(row_low) + 1), 0, 1) * 255


def _snow(x, param, rng, table):
    loc, scale, zoom, threshold, radius, sigma, blend = param
    x = _unit(x).astype(np.float32)
    h, w = x.shape[:2]
    layer = _clipped_zoom(rng.normal(size=(h, w, 1), loc=loc, scale=scale), zoom)
    layer[layer < threshold] = 0
    layer = (np.clip(layer, 0, 1) * 255).astype(np.uint8)  # the reference's 8-bit PNG for ImageMagick
    layer = np.rint(_motion_blur(layer.astype(np.float64), radius, sigma, rng.uniform(-135, -45))) / 255
    grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # cv2.COLOR_RGB2GRAY
    x = blend * x + (1 - blend) * np.maximum(x, grey[:, :, None] * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


def _frost(x, param, rng, table):
    image_weight, frost_weight = param
    h, w = x.shape[:2]
    texture = _frost_texture(int(rng.integers(len(FROST_FILES))), FROST_TEXTURE_SCALE[table])
    th, tw = texture.shape[:2]
    if th < h or tw < w:  # image larger than the texture: stretch the texture to cover it
        factor = max(h / th, w / tw)
        out_h, out_w = math.ceil(th * factor), math.ceil(tw * factor)
        texture = _resize_linear(texture, out_h, out_w, th / out_h, tw / out_w)
        th, tw = texture.shape[:2]
    top = int(rng.integers(0, max(th - h, 1)))  # randint(0, th - h): the last offset excluded
    left = int(rng.integers(0, max(tw - w, 1)))
    crop = texture[top:top + h, left:left + w].astype(np.float64)
    return np.clip(image_weight * x.astype(np.float64) + frost_weight * crop, 0, 255)


def _fog(x, param, rng, table):
    strength, decay = param
    x = _unit(x)
    h, w = x.shape[:2]
    size = 1 << (max(h, w) - 1).bit_length()  # the smallest power of two >= the image side
    peak = x.max()
    x = x + strength * _plasma_fractal(size, decay, rng)[:h, :w, None]
    return np.clip(x * peak / (peak + strength), 0, 1) * 255


def _brightness(x, shift, rng, table):
    hsv = color.rgb2hsv(_unit(x))
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + shift, 0, 1)
    return np.clip(color.hsv2rgb(hsv), 0, 1) * 255


def _contrast(x, factor, rng, table):
    x = _unit(x)
    means = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - means) * factor + means, 0, 1) * 255


def _elastic_transform(x, param, rng, table):
    alpha, sigma, affine = (value * ELASTIC_SCALE[table] for value in param)
    image = _unit(x).astype(np.float32)
    h, w = image.shape[:2]
    # random affine: three reference points moved by up to `affine` px (cv2 points, as the reference
    # builds them from (rows, cols)); warped with bilinear sampling and reflect-101 borders
    centre = np.float32((h, w)) // 2
    half = min(h, w) // 3
    src_pts = np.float32([centre + half, [centre[0] + half, centre[1] - half], centre - half])
    dst_pts = src_pts + rng.uniform(-affine, affine, size=src_pts.shape).astype(np.float32)
    forward = np.linalg.solve(np.c_[src_pts, np.ones(3)].astype(np.float64), dst_pts.astype(np.float64)).T
    inverse = np.linalg.inv(np.vstack([forward, [0, 0, 1]]))[:2]  # dst (x, y, 1) -> src (x, y)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    src_x = inverse[0, 0] * xx + inverse[0, 1] * yy + inverse[0, 2]
    src_y = inverse[1, 0] * xx + inverse[1, 1] * yy + inverse[1, 2]
    image = np.stack([ndimage.map_coordinates(image[:, :, c], (src_y, src_x), order=1, mode="mirror")
                      for c in range(3)], axis=2)
    # elastic: a smoothed uniform random field, alpha px strong, sampled with half-sample reflection
    dx = (_gaussian_field(rng.uniform(-1, 1, size=(h, w)), sigma) * alpha).astype(np.float32)
    dy = (_gaussian_field(rng.uniform(-1, 1, size=(h, w)), sigma) * alpha).astype(np.float32)
    coords = (yy + dy, xx + dx)
    out = np.stack([ndimage.map_coordinates(image[:, :, c], coords, order=1, mode="reflect")
                    for c in range(3)], axis=2)
    return np.clip(out, 0, 1) * 255


def _pixelate(x, factor, rng, table):
    h, w = x.shape[:2]
    small = Image.fromarray(x).resize((max(int(w * factor), 1), max(int(h * factor), 1)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BOX))


def _jpeg_compression(x, quality, rng, table):
    buffer = io.BytesIO()
    Image.fromarray(x).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as img:
        return np.asarray(img.convert("RGB"))


_FUNCTIONS: dict[str, Callable[[np.ndarray, object, np.random.Generator, str], np.ndarray]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "glass_blur": _glass_blur,
    "motion_blur": _motion_blur_corruption,
    "zoom_blur": _zoom_blur,
    "snow": _snow,
    "frost": _frost,
    "fog": _fog,
    "brightness": _brightness,
    "contrast": _contrast,
    "elastic_transform": _elastic_transform,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
}
