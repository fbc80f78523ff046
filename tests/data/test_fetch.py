"""Data layer: real digit sets, hidden target labels, the global batch sampler, user image folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sfda.data import DigitsDataModule, InputSpec
from sfda.data.fetch import resolve

SPEC = InputSpec(size=28, channels=1, mean=(0.5,), std=(0.5,))


def test_fashion_mnist_is_fetched_from_its_debian_package():
    dm = DigitsDataModule("fashion_mnist", role="target", input=SPEC)
    dm.setup()
    (train_x, _), (test_x, test_y) = dm.splits["train"], dm.splits["test"]
    assert train_x.shape == (60000, 28, 28) and test_x.shape == (10000, 28, 28) and train_x.dtype == np.uint8
    assert np.bincount(test_y).tolist() == [1000] * 10  # the real test split is balanced
    assert dm.class_names[0] == "t-shirt" and len(dm.class_names) == 10


@pytest.mark.parametrize("uri, package",
                         [("pypi://no-such-sfda-package==0.0.1/x.bin", "no-such-sfda-package==0.0.1"),
                          ("deb://no-such-sfda-package/usr/share/x.bin", "no-such-sfda-package")])
def test_a_failed_fetch_names_the_package_and_the_manual_alternative(uri, package, tmp_path):
    from sfda.data.fetch import FetchError, resolve

    with pytest.raises(FetchError, match="Fetch it by hand") as err:
        resolve(uri, tmp_path)
    assert package in str(err.value)
    assert not any(tmp_path.rglob("x.bin"))  # nothing half-written


def test_demo_uri_generates_on_first_use(tmp_path, monkeypatch):
    import sfda.data.benchmarks.pose_figures as figures_module

    monkeypatch.setitem(figures_module.COUNTS, ("photo", "test"), 3)
    path = resolve("demo://pose_figures/photo_test.json", tmp_path)
    assert path == tmp_path / "pose_figures" / "photo_test" / "annotations.json"
    assert len(json.loads(path.read_text())["images"]) == 3
    assert resolve("demo://pose_figures/photo_test.json", tmp_path) == path  # kept, not regenerated


def test_demo_data_of_an_older_generator_is_generated_again(tmp_path, monkeypatch):
    import sfda.data.benchmarks.pose_figures as figures_module

    monkeypatch.setitem(figures_module.COUNTS, ("photo", "test"), 2)
    path = resolve("demo://pose_figures/photo_test.json", tmp_path)
    payload = json.loads(path.read_text())
    assert payload["info"]["generator_version"] == figures_module.GENERATOR_VERSION
    payload["info"].pop("generator_version")  # as version 1 wrote it
    payload["images"] = payload["images"][:1]
    path.write_text(json.dumps(payload))
    with pytest.warns(UserWarning, match="generator version 1"):
        assert resolve("demo://pose_figures/photo_test.json", tmp_path) == path
    assert len(json.loads(path.read_text())["images"]) == 2


def test_processes_sharing_a_cache_generate_a_demo_once(tmp_path, monkeypatch):
    """Two fetches of one URI at once (sweep trials, test workers): the second waits and finds the first's
    data; without the cache lock both would see it missing and generate it twice."""
    import threading
    import time

    from sfda.data import fetch

    generated = []

    def prepare(root, part):
        out = root / "slow_demo" / f"{part}.json"
        if not out.exists():
            generated.append(part)
            time.sleep(0.3)  # a generator long enough for the other fetch to arrive meanwhile
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("{}")
        return out

    monkeypatch.setitem(fetch.DEMOS, "slow_demo", (prepare, "demo://slow_demo/<part>.json"))
    found = []
    threads = [threading.Thread(target=lambda: found.append(resolve("demo://slow_demo/a.json", tmp_path)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert generated == ["a"] and found == [tmp_path / "slow_demo" / "a.json"] * 2


def test_a_generated_file_is_read_once_however_many_images_point_into_it(tmp_path, monkeypatch):
    """Every image of a demo annotation file is located through the file's URI, which checks the file's
    generator version: that check must not parse the whole file once per image (5,000 pose figures took
    minutes before a run started)."""
    from pathlib import Path

    import sfda.data.benchmarks.pose_figures as figures_module
    from sfda.data.keypoints import read_people

    monkeypatch.setitem(figures_module.COUNTS, ("photo", "test"), 6)
    monkeypatch.setenv("SFDA_DATA", str(tmp_path))
    path = resolve("demo://pose_figures/photo_test.json", tmp_path)
    reads = []
    for name in ("read_text", "read_bytes"):
        def counted(self, *args, _real=getattr(Path, name), **kwargs):
            if self == path:
                reads.append(self)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(Path, name, counted)
    people = read_people("demo://pose_figures/photo_test.json")
    assert len(people) == 6 and Path(people[0].image).is_file()
    assert len(reads) <= 2  # the reader's own read and one version check, not one per image
