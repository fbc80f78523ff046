"""Pose data: the semi-synthetic figure generator (deterministic, human-like, occlusion labelled)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from sfda.data.benchmarks.pose_figures import FLIP_PAIRS, JOINTS, SKELETON, generate, pose
from sfda.data.fetch import resolve
from sfda.data.pose import PoseDataModule
from sfda.data.pose_views import Augment, crop_matrix, invert, warp_points
from sfda.data.transforms import InputSpec


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


def test_demo_uri_generates_on_first_use(tmp_path, monkeypatch):
    import sfda.data.benchmarks.pose_figures as figures_module

    monkeypatch.setitem(figures_module.COUNTS, ("photo", "test"), 3)
    path = resolve("demo://pose_figures/photo_test.json", tmp_path)
    assert path == tmp_path / "pose_figures" / "photo_test" / "annotations.json"
    assert len(json.loads(path.read_text())["images"]) == 3
    assert resolve("demo://pose_figures/photo_test.json", tmp_path) == path  # kept, not regenerated


# the loader: crops, views, heatmaps ----------------------------------------------------------------
SPEC = InputSpec(size=64, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def data(figures, role="source", **kwargs) -> PoseDataModule:
    module = PoseDataModule([str(figures["flat_train"])], role=role, input=SPEC, batch_size=4, **kwargs)
    module.setup()
    return module


def peak(heatmap: torch.Tensor) -> np.ndarray:
    """(x, y) of a heatmap's maximum, in heatmap pixels."""
    row, col = divmod(int(heatmap.argmax()), heatmap.shape[-1])
    return np.array([col, row])


def test_a_plain_crop_puts_each_heatmap_peak_on_its_keypoint(figures):
    module = data(figures)
    item = module.dataset("train")[0]
    assert item["image"].shape == (3, 64, 64) and item["heatmaps"].shape == (16, 16, 16)
    person = module.splits["train"][0]
    points = warp_points(person.keypoints[:, :2], item["matrix"].double().numpy())
    assert np.allclose(points, item["keypoints"].numpy(), atol=1e-4)
    assert np.allclose(warp_points(points, invert(item["matrix"].double().numpy())), person.keypoints[:, :2])
    for k in np.flatnonzero(item["weight"].numpy()):
        assert np.abs(peak(item["heatmaps"][k]) - (item["keypoints"][k].numpy() + 0.5) / 4 + 0.5).max() <= 0.5
        assert float(item["heatmaps"][k].max()) >= np.exp(-1) - 1e-6  # at most half a pixel off-centre
    assert (item["weight"].numpy() == (person.keypoints[:, 2] > 0)).all()


def test_a_flipped_view_mirrors_the_image_and_swaps_left_and_right(figures):
    module = data(figures)
    dataset = module.dataset("train")
    person, image = module.splits["train"][0], dataset.load(0)
    plain = dataset.view_of(0, image, crop_matrix(person.box, 64), None)
    mirrored = dataset.view_of(0, image, crop_matrix(person.box, 64, flip=True), None)
    assert torch.allclose(mirrored["image"], plain["image"].flip(-1), atol=1e-5)
    order = module.skeleton.flip_order()
    assert order[0] == 5 and order[5] == 0 and order[6] == 6  # r_ankle <-> l_ankle, pelvis stays
    expected = plain["keypoints"][order].clone()
    expected[:, 0] = 63 - expected[:, 0]
    assert torch.allclose(mirrored["keypoints"], expected, atol=1e-4)


def test_training_views_are_random_but_seeded_and_targets_hide_keypoints(figures):
    module = data(figures)
    augmented = module.dataset("train", train=True)
    first, again, other = augmented[(0, 11)], augmented[(0, 11)], augmented[(0, 12)]
    assert torch.equal(first["image"], again["image"]) and not torch.equal(first["image"], other["image"])
    target = data(figures, role="target")
    item = target.dataset("train", train=True, strong=True)[(0, 11)]
    assert item["weight"].sum() == 0 and item["heatmaps"].abs().sum() == 0 and not item["labelled"]
    assert item["strong"].shape == item["image"].shape and not torch.equal(item["strong"], item["image"])
    assert target.dataset("val")[0]["weight"].sum() > 0  # evaluation keeps labels, for reporting only


def test_source_holds_out_a_tenth_for_validation(figures):
    module = data(figures)
    assert len(module.splits["val"]) == 4 and len(module.splits["train"]) == 36


# bad input -------------------------------------------------------------------------------------------
def edited(figures, tmp_path, change) -> str:
    payload = json.loads(figures["flat_train"].read_text())
    change(payload)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(payload))
    for image in payload["images"]:
        (tmp_path / image["file_name"]).write_bytes(
            (figures["flat_train"].parent / image["file_name"]).read_bytes()
        )
    return str(path)


def refused(path: str, **kwargs) -> str:
    with pytest.raises(ValueError) as err:
        PoseDataModule([path], role="source", input=SPEC, **kwargs).setup()
    return str(err.value)


def test_a_keypoint_outside_its_image_is_refused_naming_file_annotation_and_joint(figures, tmp_path):
    def move(payload):
        payload["annotations"][3]["keypoints"][0] = 140.0

    text = refused(edited(figures, tmp_path, move))
    assert "edited.json: annotation 3" in text and "'r_ankle' at (140" in text and "0 <= x < 128" in text


def test_a_joint_count_that_differs_is_refused(figures, tmp_path):
    def drop(payload):
        payload["annotations"][2]["keypoints"] = payload["annotations"][2]["keypoints"][:-3]

    assert "annotation 2: keypoints holds 15 joints" in refused(edited(figures, tmp_path, drop))
    module = data(figures)
    with pytest.raises(ValueError, match=r"16 joints .* but the model predicts 17 heatmaps"):
        module.check_model_joints(17)


def test_missing_flip_pairs_with_flips_on_are_refused(figures, tmp_path):
    def strip(payload):
        del payload["categories"][0]["flip_pairs"]

    path = edited(figures, tmp_path, strip)
    assert "categories[].flip_pairs: horizontal flips are on but no flip pairs" in refused(path)
    PoseDataModule([path], role="source", input=SPEC, augment=Augment(flip=False)).setup()  # accepted
    PoseDataModule([path], role="source", input=SPEC, flip_pairs=[(0, 5)]).setup()


def test_a_training_person_without_any_labelled_joint_is_refused(figures, tmp_path):
    def blank(payload):
        payload["annotations"][1]["keypoints"] = [0.0] * 48

    text = refused(edited(figures, tmp_path, blank))
    assert "annotation 1" in text and "no labelled joint" in text
