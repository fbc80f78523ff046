"""Readers of the published corruption layouts, tested on small files written here in those layouts:
CIFAR-10-C (``<corruption>.npy`` of 5 severities + ``labels.npy``) and ImageNet-C
(``<corruption>/<severity>/<wnid>/*.JPEG``, RobustBench's 5,000-image subset)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sfda.data import CifarC, ImageNetC, StreamDataModule
from sfda.data.fetch import resolve
from sfda.data.stream_files import CIFAR10, ROBUSTBENCH_IDS


def cifar_c(root, n: int = 4, corruptions=("fog", "snow")):
    """Severity s of corruption k holds images filled with 10 k + s; labels 0..n-1 repeated."""
    root.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(corruptions):
        images = np.concatenate([np.full((n, 32, 32, 3), 10 * k + s, np.uint8) for s in range(1, 6)])
        np.save(root / f"{name}.npy", images)
    np.save(root / "labels.npy", np.tile(np.arange(n) % 10, 5))
    return root


def test_cifar_c_domains_are_the_rows_of_their_severity(tmp_path):
    source = CifarC(str(cifar_c(tmp_path)), corruptions=["fog", "snow"])
    assert source.class_names == CIFAR10
    domain = source.domain("snow", 3)
    assert domain.name == "snow-3" and len(domain.labels) == 4
    assert domain.image(2).shape == (32, 32, 3) and int(domain.image(2)[0, 0, 0]) == 13
    assert domain.labels.tolist() == [0, 1, 2, 3]
    stream = StreamDataModule(source, setting="continual", severities=[5])
    assert stream.domain_names == ["fog-5", "snow-5"] and stream.num_samples() == 8


@pytest.mark.parametrize("damage, needle", [
    (lambda root: np.save(root / "fog.npy", np.zeros((15, 32, 32, 3), np.uint8)),
     "fog.npy: 15 images but"),
    (lambda root: (root / "fog.npy").unlink(), "fog.npy: no such file (data.source.root"),
    (lambda root: np.save(root / "labels.npy", np.arange(7)),
     "labels.npy: expected integer labels of shape (5 N,)"),
    (lambda root: np.save(root / "labels.npy", np.full(20, 12)), "labels.npy: expected labels in 0..9"),
    (lambda root: np.save(root / "labels.npy", np.array([{"a": 1}] * 20, dtype=object)),
     "labels.npy: not a plain numpy array file"),
    (lambda root: np.save(root / "fog.npy", np.zeros((20, 32, 32), np.uint8)),
     "fog.npy: expected uint8 images of shape (5 N, H, W, 3)"),
])
def test_a_cifar_c_file_that_lies_is_refused_naming_it(tmp_path, damage, needle):
    root = cifar_c(tmp_path)
    damage(root)
    with pytest.raises((ValueError, FileNotFoundError), match=needle.replace("(", r"\(").replace(")", r"\)")):
        CifarC(str(root), corruptions=["fog"]).domain("fog", 5)


def test_cifar_c_refuses_an_unknown_class_set_or_corruption(tmp_path):
    with pytest.raises(ValueError, match="data.source.classes: expected 'cifar10' or 'cifar100'"):
        CifarC(str(tmp_path), classes="cifar20")
    with pytest.raises(ValueError, match="data.source.corruptions"):
        CifarC(str(tmp_path), corruptions=["rain"])


def test_imagenet_c_reads_the_robustbench_subset_with_sorted_wordnet_classes(tmp_path):
    ids = [line for line in resolve(ROBUSTBENCH_IDS).read_text().splitlines() if line.strip()]
    assert len(ids) == 5000 and len(set(ids)) == 5000
    chosen = ids[:3]
    for severity in (1, 5):
        for k, name in enumerate(chosen):
            path = tmp_path / "fog" / str(severity) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((224, 224, 3), 40 * k + severity, np.uint8)).save(path, format="JPEG")
    source = ImageNetC(str(tmp_path), subset="all", corruptions=["fog"])
    assert len(source.class_names) == 1000 and source.class_names[0] == "n01440764"
    domain = source.domain("fog", 5)
    order = sorted(chosen)
    assert [source.class_names[c] for c in domain.labels] == [i.split("/")[0] for i in order]
    assert abs(int(domain.image(0).mean()) - (40 * chosen.index(order[0]) + 5)) <= 2  # a JPEG round trip
    with pytest.raises(FileNotFoundError, match="of the first 50 robustbench_5000 images missing"):
        ImageNetC(str(tmp_path), corruptions=["fog"]).domain("fog", 5)
    with pytest.raises(FileNotFoundError, match=r"snow/5: no such folder"):
        ImageNetC(str(tmp_path), subset="all", corruptions=["snow"]).domain("snow", 5)
