"""ImageNet-C corruptions: every one runs at any image size, is a function of its seed, and follows the
reference generators (make_cifar_c.py / make_imagenet_c.py of hendrycks/robustness): deterministic ones
against the corrupt-tta port and the reference formulas, random ones by replaying the reference code on
the same random draws."""

from __future__ import annotations

import importlib.util
import io

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image
from scipy.ndimage import map_coordinates
from skimage import color
from skimage.filters import gaussian
from skimage.util import random_noise

from sfda.data.corruptions import (
    CORRUPTIONS,
    FROST_FILES,
    PARAMETERS,
    SEVERITIES,
    _motion_blur,
    _motion_blur_taps,
    _plasma_fractal,
    check_corruption,
    corrupt,
)
from sfda.data.fetch import resolve

PORT = "pypi://corrupt-tta==0.1.7/corrupt_tta/"
DETERMINISTIC = ("defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression")
RANDOM = tuple(name for name in CORRUPTIONS if name not in DETERMINISTIC)


def _resized(image: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


ASTRONAUT = skimage.data.astronaut()  # a real photo, (512, 512, 3)
RGB32 = _resized(ASTRONAUT, 32, 32)
RGB224 = _resized(ASTRONAUT, 224, 224)
WIDE = _resized(ASTRONAUT, 24, 40)  # not square, not a power of two
GREY28 = _resized(skimage.data.camera(), 28, 28)  # an MNIST-sized grey image


@pytest.fixture(scope="module")
def port():
    """The corrupt-tta port's corruptions.py (reference functions on numpy arrays), read from its wheel."""
    spec = importlib.util.spec_from_file_location("corrupt_tta_port", resolve(PORT + "corruptions.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("table", ["cifar", "imagenet"])
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_corruption_keeps_shape_and_dtype_at_any_size(name, table):
    for image in (RGB32, GREY28, WIDE, RGB224):
        before = image.copy()
        for severity in (1, 5):
            out = corrupt(image, name, severity, _rng(severity), table)
            assert out.dtype == np.uint8 and out.shape == image.shape, (image.shape, severity)
        assert np.array_equal(image, before)  # the input is never written to


@pytest.mark.parametrize("name", [name for name in CORRUPTIONS if name != "elastic_transform"])
def test_severity_5_changes_the_image_more_than_severity_1(name):
    # elastic_transform is left out on purpose: in the reference table severity 1 is a pure random affine of
    # up to 2.56 px (no elastic field) and severity 5 a 0.96-px affine plus a local field, so the mean pixel
    # change is not ordered by severity (it is not in make_cifar_c.py either); its replay test below covers it
    for image in (RGB32, GREY28):
        change = {severity: np.mean([np.abs(corrupt(image, name, severity, _rng(seed)) - image.astype(float))
                                     .mean() for seed in range(4)]) for severity in (1, 5)}
        assert change[5] > change[1] > 0, (image.shape, change)


# ------------------------------------------------------------------------------------------------ seeding


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_the_seed_alone_decides_the_output(name):
    np.random.seed(123)
    global_state = np.random.get_state()[1].copy()
    first = corrupt(RGB32, name, 3, _rng(7))
    assert np.array_equal(first, corrupt(RGB32, name, 3, _rng(7)))
    assert np.array_equal(np.random.get_state()[1], global_state)  # numpy's global RNG is never used
    other = corrupt(RGB32, name, 3, _rng(8))
    assert np.array_equal(first, other) == (name in DETERMINISTIC)


# ------------------------------------------------------------------------------------------------ reference


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_corruptions_match_the_port_at_224_px(name, port):
    for severity in SEVERITIES:
        reference = np.uint8(getattr(port, name)(RGB224, severity)).astype(int)
        diff = np.abs(corrupt(RGB224, name, severity, _rng(), "imagenet").astype(int) - reference)
        # +-1 where float rounding lands on the other side of an integer before the truncation (the port's
        # brightness converts HSV in float32 with cv2, the reference in float64 with skimage)
        assert diff.max() <= 1 and (diff > 0).mean() < 0.1, (severity, diff.max(), (diff > 0).mean())


# make_cifar_c.py's constants, transcribed here independently of the module's table
CIFAR_REFERENCE = {
    "brightness": (.05, .1, .15, .2, .3),
    "contrast": (.75, .5, .4, .3, .15),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    "zoom_blur": (1.06, 1.11, 1.16, 1.21, 1.26),  # np.arange(1, stop, 0.01)
}


def _cifar_reference(name: str, x: np.ndarray, c, port) -> np.ndarray:
    """The make_cifar_c.py function `name` at parameter c on (32, 32, 3) uint8, before np.uint8."""
    if name == "brightness":
        hsv = color.rgb2hsv(x / 255.)
        hsv[:, :, 2] = np.clip(hsv[:, :, 2] + c, 0, 1)
        return np.clip(color.hsv2rgb(hsv), 0, 1) * 255
    if name == "contrast":
        means = np.mean(x / 255., axis=(0, 1), keepdims=True)
        return np.clip((x / 255. - means) * c + means, 0, 1) * 255
    if name == "pixelate":
        small = Image.fromarray(x).resize((int(32 * c), int(32 * c)), Image.BOX)
        return np.asarray(small.resize((32, 32), Image.BOX))
    if name == "jpeg_compression":
        out = io.BytesIO()
        Image.fromarray(x).save(out, "JPEG", quality=c)
        return np.asarray(Image.open(out))
    if name == "defocus_blur":
        kernel = port.disk(radius=c[0], alias_blur=c[1])
        channels = [cv2.filter2D(x[:, :, d] / 255., -1, kernel) for d in range(3)]
        return np.clip(np.stack(channels, axis=2), 0, 1) * 255
    factors = np.arange(1, c, 0.01)  # zoom_blur
    image = (x / 255.).astype(np.float32)
    out = np.zeros_like(image)
    for factor in factors:
        out += port.clipped_zoom(image, factor)
    return np.clip((image + out) / (len(factors) + 1), 0, 1) * 255


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_corruptions_follow_the_cifar_reference_table(name, port):
    for severity in SEVERITIES:
        reference = _cifar_reference(name, RGB32, CIFAR_REFERENCE[name][severity - 1], port)
        reference = np.uint8(reference).astype(int)
        diff = np.abs(corrupt(RGB32, name, severity, _rng(), "cifar").astype(int) - reference)
        assert diff.max() <= 1 and (diff > 0).mean() < 0.05, (severity, diff.max())


def test_noises_replay_the_reference_on_the_same_draws():
    x = RGB32
    for table in ("cifar", "imagenet"):
        for severity in SEVERITIES:
            sigma, rate, amount = (PARAMETERS[table][name][severity - 1]
                                   for name in ("gaussian_noise", "shot_noise", "impulse_noise"))
            seed = severity
            expected = {
                "gaussian_noise": np.clip(x / 255. + _rng(seed).normal(size=x.shape, scale=sigma), 0, 1),
                "shot_noise": np.clip(_rng(seed).poisson(x / 255. * rate) / rate, 0, 1),
                "impulse_noise": random_noise(x / 255., mode="s&p", amount=amount, rng=_rng(seed)).clip(0, 1),
            }
            for name, reference in expected.items():
                ours = corrupt(x, name, severity, _rng(seed), table)
                assert np.array_equal(ours, np.uint8(reference * 255)), (name, table, severity)


def test_noise_statistics_follow_the_table():
    grey = np.full((64, 64, 3), 128, np.uint8)
    clean = grey / 255.
    for severity in SEVERITIES:
        sigma = (0.04, 0.06, .08, .09, .10)[severity - 1]  # make_cifar_c.py
        noise = corrupt(grey, "gaussian_noise", severity, _rng(severity)) / 255. - clean
        assert noise.std() == pytest.approx(sigma, rel=0.03)
        rate = (500, 250, 100, 75, 50)[severity - 1]  # Poisson: var(k / rate) = x / rate
        noise = corrupt(grey, "shot_noise", severity, _rng(severity)) / 255. - clean
        assert noise.std() == pytest.approx(np.sqrt(clean.mean() / rate), rel=0.03)
        amount = (.03, .06, .09, 0.17, 0.27)[severity - 1]  # make_imagenet_c.py
        out = corrupt(grey, "impulse_noise", severity, _rng(severity), "imagenet")
        assert (out == 255).mean() == pytest.approx(amount / 2, rel=0.1)
        assert (out == 0).mean() == pytest.approx(amount / 2, rel=0.1)
        assert ((out == 0) | (out == 255) | (out == 128)).all()


@pytest.mark.parametrize("table", ["cifar", "imagenet"])
def test_glass_blur_replays_the_reference_loop(table):
    params = {"cifar": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
              "imagenet": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)]}[table]
    for severity, (sigma, delta, iterations) in enumerate(params, start=1):
        rng = _rng(severity)
        x = np.uint8(gaussian(RGB32 / 255., sigma=sigma, channel_axis=-1) * 255)
        rows, cols = range(32 - delta, delta, -1), range(32 - delta, delta, -1)
        for _ in range(iterations):
            draws = iter(rng.integers(-delta, delta, size=(len(rows) * len(cols), 2)))
            for h in rows:
                for w in cols:
                    dx, dy = next(draws)
                    h_prime, w_prime = h + dy, w + dx
                    # the reference's line, verbatim: on (3,)-views it copies rather than swaps
                    x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
        expected = np.uint8(np.clip(gaussian(x / 255., sigma=sigma, channel_axis=-1), 0, 1) * 255)
        ours = corrupt(RGB32, "glass_blur", severity, _rng(severity), table)
        assert np.array_equal(ours, expected), severity


def test_fog_replays_the_reference_plasma_fractal(port, monkeypatch):
    for image, table, mapsize in ((RGB32, "cifar", 32), (GREY28, "cifar", 32), (RGB224, "imagenet", 256)):
        for severity in SEVERITIES:
            strength, decay = PARAMETERS[table]["fog"][severity - 1]
            monkeypatch.setattr(port.np.random, "uniform", _rng(severity).uniform)  # the reference's draws
            fractal = port.plasma_fractal(mapsize=mapsize, wibbledecay=decay)
            monkeypatch.undo()
            assert np.allclose(_plasma_fractal(mapsize, decay, _rng(severity)), fractal, rtol=0, atol=1e-12)
            x = np.repeat(image[:, :, None], 3, axis=2) / 255. if image.ndim == 2 else image / 255.
            h, w = image.shape[:2]
            peak = x.max()
            fogged = np.clip((x + strength * fractal[:h, :w][..., None]) * peak / (peak + strength), 0, 1)
            fogged = fogged * 255
            expected = np.uint8(fogged.mean(axis=2) if image.ndim == 2 else fogged)
            diff = np.abs(corrupt(image, "fog", severity, _rng(severity), table).astype(int) - expected)
            assert diff.max() <= 1 and (diff > 0).mean() < 0.01


@pytest.mark.parametrize("table, image", [("cifar", RGB32), ("imagenet", RGB224)])
def test_frost_replays_the_reference_crop(table, image):
    h, w = image.shape[:2]
    for severity in SEVERITIES:
        weights = PARAMETERS[table]["frost"][severity - 1]
        rng = _rng(severity)
        # the reference: cv2.imread(one of 5 files), shrunk by 0.2 for CIFAR, a random crop, BGR -> RGB
        frost = cv2.imread(str(resolve(PORT + "assets/frost/" + FROST_FILES[rng.integers(5)])))
        if table == "cifar":
            frost = cv2.resize(frost, (0, 0), fx=0.2, fy=0.2)
        top, left = rng.integers(0, frost.shape[0] - h), rng.integers(0, frost.shape[1] - w)
        frost = frost[top:top + h, left:left + w][..., [2, 1, 0]]
        expected = np.uint8(np.clip(weights[0] * image + weights[1] * frost, 0, 255))
        assert np.array_equal(corrupt(image, "frost", severity, _rng(severity), table), expected)


def test_frost_covers_an_image_larger_than_its_texture():
    big = _resized(ASTRONAUT, 400, 700)  # the cifar textures are 63-120 px after the 0.2 shrink
    out = corrupt(big, "frost", 5, _rng(), "cifar")
    assert out.shape == big.shape and np.abs(out.astype(int) - big).mean() > 10


def test_elastic_transform_replays_the_reference(port):
    for table, image, severities in (("cifar", RGB32, SEVERITIES), ("imagenet", RGB224, (1, 2, 5))):
        size = {"cifar": 32, "imagenet": 244}[table]  # the reference's IMSIZE (244 sic)
        for severity in severities:
            alpha, sigma, affine = (v * size for v in PARAMETERS[table]["elastic_transform"][severity - 1])
            rng = _rng(severity)
            x = np.array(image, dtype=np.float32) / 255.
            center, half = np.float32(x.shape[:2]) // 2, min(x.shape[:2]) // 3
            pts1 = np.float32([center + half, [center[0] + half, center[1] - half], center - half])
            pts2 = pts1 + rng.uniform(-affine, affine, size=pts1.shape).astype(np.float32)
            x = cv2.warpAffine(x, cv2.getAffineTransform(pts1, pts2), x.shape[:2][::-1],
                               borderMode=cv2.BORDER_REFLECT_101)
            dx = (gaussian(rng.uniform(-1, 1, size=x.shape[:2]), sigma, mode="reflect", truncate=3)
                  * alpha).astype(np.float32)[..., None]
            dy = (gaussian(rng.uniform(-1, 1, size=x.shape[:2]), sigma, mode="reflect", truncate=3)
                  * alpha).astype(np.float32)[..., None]
            xx, yy, zz = np.meshgrid(np.arange(x.shape[1]), np.arange(x.shape[0]), np.arange(3))
            indices = np.reshape(yy + dy, (-1, 1)), np.reshape(xx + dx, (-1, 1)), np.reshape(zz, (-1, 1))
            expected = np.uint8(np.clip(map_coordinates(x, indices, order=1, mode="reflect"), 0, 1) * 255)
            ours = corrupt(image, "elastic_transform", severity, _rng(severity), table)
            diff = np.abs(ours.astype(int) - expected.reshape(x.shape))
            # the affine warp is scipy's, not cv2's: +-1 where float rounding meets the truncation
            assert diff.max() <= 1 and (diff > 0).mean() < 0.001, (table, severity, diff.max())


def test_motion_blur_kernel_is_imagemagicks():
    for radius, sigma in ((6, 1), (9, 2.5), (20, 15)):
        weights, dy, dx = _motion_blur_taps(radius, sigma, 0.0)
        assert len(weights) == 2 * radius + 1 and weights.sum() == pytest.approx(1)
        # a one-sided half Gaussian starting at the pixel itself
        assert weights[1] / weights[0] == pytest.approx(np.exp(-1 / (2 * sigma**2)))
        assert (dy == 0).all() and (dx == np.arange(2 * radius + 1)).all()
    _, dy, dx = _motion_blur_taps(6, 1, 90.0)
    assert (dy == np.arange(13)).all() and (dx == 0).all()
    _, dy, dx = _motion_blur_taps(6, 1, -45.0)  # offsets rounded half down: ceil(i cos - 0.5)
    assert (dx == np.ceil(np.arange(13) * np.cos(np.pi / 4) - 0.5)).all() and (dy == -dx).all()
    impulse = np.zeros((32, 32, 1))
    impulse[16, 20] = 255.0
    out = _motion_blur(impulse, 6, 2, 0.0)  # output (y, x) samples (y, x + i): the impulse smears to the left
    weights, _, _ = _motion_blur_taps(6, 2, 0.0)
    assert np.allclose(out[16, 20 - np.arange(13), 0], 255 * weights) and out.sum() == pytest.approx(255)


def test_snow_replays_the_reference_with_our_motion_blur(port):
    for severity in SEVERITIES:
        loc, scale, zoom, threshold, radius, sigma, blend = PARAMETERS["cifar"]["snow"][severity - 1]
        rng = _rng(severity)
        x = np.array(RGB32, dtype=np.float32) / 255.
        layer = port.clipped_zoom(rng.normal(size=x.shape[:2], loc=loc, scale=scale)[..., np.newaxis], zoom)
        layer[layer < threshold] = 0
        layer = np.uint8(np.clip(layer.squeeze(), 0, 1) * 255)[..., None].astype(float)
        layer = np.rint(_motion_blur(layer, radius, sigma, rng.uniform(-135, -45))) / 255.  # for Wand
        grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None]
        x = blend * x + (1 - blend) * np.maximum(x, grey * 1.5 + 0.5)
        expected = np.uint8(np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255)
        diff = np.abs(corrupt(RGB32, "snow", severity, _rng(severity)).astype(int) - expected)
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01


# ------------------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("name, severity, bad", [("gausian_noise", 3, "'gausian_noise'"), ("speckle_noise", 1,
                                                 "'speckle_noise'"), ("fog", 0, "severity 0"),
                                                 ("fog", 6, "severity 6"), ("fog", 2.0, "severity 2.0"),
                                                 ("fog", True, "severity True")])
def test_check_corruption_names_the_field_the_value_and_the_choices(name, severity, bad):
    with pytest.raises(ValueError, match=r"^stream\.domains\[2\]: ") as err:
        check_corruption(name, severity, "stream.domains[2]")
    message = str(err.value)
    assert bad in message
    if "severity" in bad:
        assert "1, 2, 3, 4, 5" in message
    else:
        assert all(known in message for known in CORRUPTIONS)
    if name == "gausian_noise":
        assert "did you mean 'gaussian_noise'" in message


def test_check_corruption_accepts_every_valid_pair():
    for name in CORRUPTIONS:
        for severity in (*SEVERITIES, np.int64(3)):
            check_corruption(name, severity, "domain")


@pytest.mark.parametrize("image, got", [
    (RGB32.astype(np.float32), "float32 array of shape (32, 32, 3)"),
    (np.zeros((32, 32, 4), np.uint8), "shape (32, 32, 4)"),
    (np.zeros((32, 32, 1), np.uint8), "shape (32, 32, 1)"),
    (np.zeros((3, 32, 32), np.uint8), "shape (3, 32, 32)"),
    (np.zeros((4, 4, 3), np.uint8), "shape (4, 4, 3)"),
    (np.zeros(32, np.uint8), "shape (32,)"),
    (RGB32.tolist(), "a list"),
])
def test_corrupt_refuses_a_wrong_image(image, got):
    expected = r"^image: expected a uint8 array of shape \(H, W\) or \(H, W, 3\) with H, W >= 8; got "
    with pytest.raises(ValueError, match=expected) as err:
        corrupt(image, "fog", 3, _rng())
    assert got in str(err.value)


def test_corrupt_refuses_a_wrong_name_severity_table_or_rng():
    with pytest.raises(ValueError, match=r"^name: unknown corruption 'blur'.*gaussian_noise, shot_noise"):
        corrupt(RGB32, "blur", 3, _rng())
    for severity in (0, 6):
        with pytest.raises(ValueError, match=rf"^severity: severity {severity} .*1, 2, 3, 4, 5"):
            corrupt(RGB32, "fog", severity, _rng())
    table_error = r"^table: unknown parameter table 'tiny'; expected one of: cifar, imagenet$"
    with pytest.raises(ValueError, match=table_error):
        corrupt(RGB32, "fog", 3, _rng(), "tiny")
    with pytest.raises(TypeError, match=r"^rng: expected a numpy.random.Generator"):
        corrupt(RGB32, "fog", 3, np.random.RandomState(0))
