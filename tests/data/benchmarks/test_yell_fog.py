"""YELL fog (REAL IMAGES, SYNTHETIC FOG): the scattering formula, determinism, refused parameters, and
the four parts read by DetectionDataModule with the wheel's box counts and the target boxes hidden."""

import json

import numpy as np
import pytest

from sfda.data import DetectionDataModule
from sfda.data.benchmarks.yell_fog import Fog, add_fog, generate, transmission
from sfda.data.fetch import data_root, resolve
from sfda.data.transforms import InputSpec

SPEC = InputSpec(size=64, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)


def module(path, role: str) -> DetectionDataModule:
    """The part ``path`` as the yell_fog recipes read it (400-pixel tiles, 10% overlap)."""
    data = DetectionDataModule([str(path)], role=role, class_names=["Tree"], input=SPEC, tile_size=400,
                               tile_overlap=0.1)
    data.setup()
    return data


def test_fog_on_a_constant_image_follows_the_scattering_formula():
    fog = Fog(beta=1.0, airlight=0.9, ramp=0.0, variation=0.0)
    t = transmission(4, 5, fog)
    assert np.allclose(t, np.exp(-1.0))  # constant depth 1: t = exp(-beta)
    foggy = add_fog(np.full((4, 5, 3), 51, np.uint8), fog)  # J = 0.2
    expected = round((0.2 * np.exp(-1.0) + 0.9 * (1 - np.exp(-1.0))) * 255)  # I = J t + A (1 - t) = 0.642
    assert (foggy == expected).all() and expected == 164


def test_the_ramp_thickens_the_fog_downwards_and_the_default_fog_is_heavy():
    t = transmission(300, 200, Fog(variation=0.0))
    assert (np.diff(t[:, 0]) < 0).all() and np.allclose(t, t[:, :1])
    assert 0.3 <= transmission(512, 512, Fog()).mean() <= 0.5


def test_the_same_seed_gives_identical_fog_and_another_seed_another():
    image = np.random.default_rng(0).integers(0, 256, (96, 80, 3), dtype=np.uint8)
    first, again = add_fog(image, Fog(seed=3, scale=16)), add_fog(image, Fog(seed=3, scale=16))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, add_fog(image, Fog(seed=4, scale=16)))


@pytest.mark.slow
def test_a_part_written_twice_is_byte_identical_and_named_real_images_synthetic_fog(tmp_path):
    parts = [generate(tmp_path / name, "fog", "test", wheel_root=data_root()) for name in ("a", "b")]
    assert (parts[0].parent / "image.png").read_bytes() == (parts[1].parent / "image.png").read_bytes()
    assert "REAL IMAGES, SYNTHETIC FOG" in json.loads(parts[0].read_text())["info"]["description"]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("beta", -1, r"fog.beta: expected a value in \(0, 10\], got -1"),
        ("beta", float("nan"), r"fog.beta: expected a value in \(0, 10\], got nan"),
        ("airlight", 1.5, r"fog.airlight: expected a value in \(0, 1\], got 1.5"),
        ("ramp", 2, r"fog.ramp: expected a value in \[0, 2\), got 2"),
        ("variation", -0.1, r"fog.variation: expected a value in \[0, 1\), got -0.1"),
        ("scale", 4, r"fog.scale: expected an integer in \[8, 4096\], got 4"),
        ("seed", "7", r"fog.seed: expected an integer in \[0, \d+\], got '7'"),
    ],
)
def test_fog_parameters_out_of_range_are_refused_by_field(field, value, expected):
    with pytest.raises(ValueError, match=expected):
        Fog(**{field: value})


def test_an_unknown_part_is_refused_naming_the_parts(tmp_path):
    with pytest.raises(ValueError, match=r"unknown part haze_train; expected one of \['clean_train'"):
        generate(tmp_path, "haze", "train", wheel_root=data_root())
    with pytest.raises(FileNotFoundError, match="demo://yell_fog/<clean_train"):
        resolve("demo://yell_fogs/fog_test.json", tmp_path)


@pytest.mark.slow
def test_the_parts_load_with_the_wheel_boxes_and_target_train_boxes_hidden(tmp_path):
    parts = {
        part: generate(tmp_path, *part.split("_"), wheel_root=data_root())
        for part in ("clean_train", "fog_train", "fog_test", "clean_test")
    }
    for part, count in (("clean_train", 574), ("fog_train", 574), ("fog_test", 279), ("clean_test", 279)):
        assert len(json.loads(parts[part].read_text())["annotations"]) == count
    target = module(parts["fog_train"], "target")
    assert len(target.splits["train"]) == 49  # 2299x2472 in 400-pixel tiles at stride 360: 7 x 7
    counts = [len(record.boxes) for record in target.splits["test"]]  # the same tiles, for reporting
    busiest = int(np.argmax(counts))
    item = target.dataset("train", train=True)[busiest]
    assert not item["labelled"] and len(item["boxes"]) == 0
    assert len(target.dataset("test")[busiest]["boxes"]) == counts[busiest] > 0
    test = module(parts["fog_test"], "target")
    assert len(test.splits["train"]) == 12  # 1249x1035 in 400-pixel tiles at stride 360: 4 x 3
