"""Pose data: the semi-synthetic figure generator (deterministic, human-like, occlusion labelled)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from sfda.data.benchmarks.pose_figures import (
    FLIP_PAIRS,
    JOINTS,
    SKELETON,
    draw_posture,
    generate,
    mirror_twin,
    place,
    pose,
    render_figure,
)


def digest(folder) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.iterdir()))).hexdigest()


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    root = tmp_path_factory.mktemp("figures")
    return {part: generate(root, *part.split("_"), count=40) for part in ("flat_train", "photo_train")}


def test_the_same_seed_writes_the_same_files(figures, tmp_path):
    again = generate(tmp_path, "flat", "train", count=40)
    assert digest(again.parent) == digest(figures["flat_train"].parent)
    other = generate(tmp_path / "other", "flat", "train", count=40, seed=5)
    assert digest(other.parent) != digest(again.parent)


def test_annotations_are_coco_keypoints_with_names_skeleton_and_flip_pairs(figures):
    from pycocotools.coco import COCO

    coco = COCO(str(figures["photo_train"]))
    category = coco.loadCats(1)[0]
    assert category["keypoints"] == list(JOINTS) and len(JOINTS) == 16
    assert category["skeleton"] == [[a + 1, b + 1] for a, b in SKELETON]
    assert category["flip_pairs"] == [list(p) for p in FLIP_PAIRS]
    for flipped in FLIP_PAIRS:  # a flip pair joins a right joint to its left one
        assert {JOINTS[flipped[0]][:2], JOINTS[flipped[1]][:2]} == {"r_", "l_"}
    assert len(coco.getAnnIds()) == len(coco.getImgIds()) == 40


def keypoints_of(path):
    payload = json.loads(path.read_text())
    return np.array([a["keypoints"] for a in payload["annotations"]]).reshape(-1, 16, 3), payload


def test_keypoints_lie_in_their_image_and_box_and_occlusion_is_labelled(figures):
    for path in figures.values():
        points, payload = keypoints_of(path)
        labelled = points[..., 2] > 0
        assert labelled.mean() > 0.98  # the figures fit on the canvas
        assert ((points[..., :2] >= 0) & (points[..., :2] < 128)).all(axis=-1)[labelled].all()
        for person, annotation in zip(points, payload["annotations"], strict=True):
            x, y, w, h = annotation["bbox"]
            inside = person[person[:, 2] > 0, :2]
            assert (inside[:, 0] >= x - 1).all() and (inside[:, 0] <= x + w + 1).all()
            assert (inside[:, 1] >= y - 1).all() and (inside[:, 1] <= y + h + 1).all()
        hidden = (points[..., 2] == 1).mean()
        assert 0.02 < hidden < 0.5  # self-occlusion (and occluders) hide some joints, not most


def test_figures_are_upright_with_human_proportions():
    rng = np.random.default_rng(0)
    for _ in range(200):
        j = pose(rng).joints
        assert j[9, 1] < j[8, 1] < j[7, 1] < j[6, 1]  # head top above neck above thorax above pelvis
        torso = np.linalg.norm(j[7] - j[6])
        for a, b, low, high in ((2, 1, 0.6, 0.9), (1, 0, 0.55, 0.85), (12, 11, 0.45, 0.65)):
            assert low * torso <= np.linalg.norm(j[a] - j[b]) <= high * torso


def test_the_target_domain_looks_different(figures):
    flat = np.stack([np.asarray(Image.open(p)) for p in sorted(figures["flat_train"].parent.glob("*.png"))])
    photo = np.stack([np.asarray(Image.open(p)) for p in sorted(figures["photo_train"].parent.glob("*.png"))])
    corner = lambda images: images[:, :8, :8].std(axis=(1, 2)).mean()  # noqa: E731 (per channel)
    assert corner(flat) < 1.0 < 5.0 < corner(photo)  # plain backgrounds vs photographs with noise


def test_the_image_tells_left_from_right():
    """The figure turned by 180 degrees with its sides' draws swapped lands on the same pixels with left
    and right labels swapped: without the face cue the two images are identical (the ambiguity of the
    version 1 figures), with it they differ in every figure."""
    flip = np.arange(16)
    for a, b in FLIP_PAIRS:
        flip[a], flip[b] = b, a
    for k in range(20):
        posture = draw_posture(np.random.default_rng(k))
        figure, twin = place(posture), place(mirror_twin(posture))
        np.testing.assert_allclose(twin.joints, figure.joints[flip], atol=1e-9)
        for domain in ("flat",):
            plain = [render_figure(np.random.default_rng(99), domain, f, [], face_cue=False)[0]
                     for f in (figure, twin)]
            assert np.array_equal(*plain)
            cued = [render_figure(np.random.default_rng(99), domain, f, [])[0] for f in (figure, twin)]
            assert not np.array_equal(*cued)
