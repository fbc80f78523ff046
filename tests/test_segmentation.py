"""Segmentation adaptation: losses, priors, volume metrics, datalist checks, and the CLI on the real
Colin27 -> ITK skull-stripping demo volumes (cut down: a small UNet, one epoch)."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import ROOT, SMALL_UNET, results_of, run_sfda

from sfda.data import DatalistError, SegmentationDataModule, VolumeSpec
from sfda.losses import class_ratio_kl, predicted_class_ratio, weighted_entropy
from sfda.metrics import VolumeScores, volume_scores
from sfda.pseudo_labels import ConstantSizes, ImageSizes, SourceEstimate, class_fractions, prior_from_sizes
from sfda.report.command import build_report

RECIPES = ROOT / "recipes" / "segmentation" / "colin27_itk"


# losses ---------------------------------------------------------------------------------------
def test_weighted_entropy_matches_its_formula():
    probs = torch.softmax(torch.randn(2, 3, 4, 5), dim=1)
    nu = torch.tensor([0.2, 0.3, 0.5])
    expected = -sum(nu[k] * (probs[:, k] * torch.log(probs[:, k] + 1e-10)).sum()
                    for k in range(3)) / (2 * 4 * 5)
    assert torch.allclose(weighted_entropy(probs, nu), expected)


def test_class_ratio_of_one_hot_predictions_is_the_class_fraction_and_kl_is_zero_at_the_prior():
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[0, :2] = 1  # 25% foreground in image 0, none in image 1
    probs = torch.nn.functional.one_hot(labels, 2).movedim(-1, 1).float()
    ratio = predicted_class_ratio(probs)
    assert torch.allclose(ratio, torch.tensor([[0.75, 0.25], [1.0, 0.0]]))
    assert torch.allclose(ratio, class_fractions(labels, 2))
    for direction in ("adami", "adaent"):
        assert class_ratio_kl(ratio, ratio, direction).abs() < 1e-6
        assert class_ratio_kl(ratio, torch.tensor([[0.5, 0.5], [0.5, 0.5]]), direction) > 0.1


def test_kl_directions_differ_and_a_zero_prior_pushes_the_class_to_zero_in_adami():
    ratio = torch.tensor([[0.7, 0.3]], requires_grad=True)
    prior = torch.tensor([[1.0, 0.0]])
    adami = class_ratio_kl(ratio, prior, "adami")
    adami.backward()
    assert ratio.grad[0, 1] > ratio.grad[0, 0]  # gradient descent lowers the absent class's size
    assert not torch.isclose(adami, class_ratio_kl(ratio.detach(), prior, "adaent"))


def test_no_nan_when_a_class_is_absent_from_the_batch():
    probs = torch.zeros(4, 2, 8, 8)
    probs[:, 0] = 1.0  # every pixel certainly background: the brain class is absent
    probs.requires_grad_(True)
    prior = torch.tensor([[1.0, 0.0]] * 4)
    loss = weighted_entropy(probs, torch.tensor([0.1, 0.9])) \
        + class_ratio_kl(predicted_class_ratio(probs), prior)
    loss = loss + class_ratio_kl(predicted_class_ratio(probs), prior, "adaent")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(probs.grad).all()


# priors ---------------------------------------------------------------------------------------
def test_prior_from_sizes_puts_the_remainder_in_background():
    table = prior_from_sizes(torch.tensor([0.2, 0.1]),
                             torch.tensor([[True, True], [False, True], [False, False]]))
    assert torch.allclose(table, torch.tensor([[0.7, 0.2, 0.1], [0.9, 0.0, 0.1], [1.0, 0.0, 0.0]]))


def test_constant_sizes_with_csv_tags_and_a_missing_id(tmp_path):
    tags = tmp_path / "tags.csv"
    tags.write_text("id,brain\nv:2:0,0\nv:2:1,1\n")
    table = ConstantSizes([0.3], str(tags)).table(["v:2:0", "v:2:1"], ["background", "brain"])
    assert torch.allclose(table, torch.tensor([[1.0, 0.0], [0.7, 0.3]]))
    with pytest.raises(KeyError, match=r"tags.csv: no row for 1 sample ids, e.g. \['v:2:7'\]"):
        ConstantSizes([0.3], str(tags)).table(["v:2:0", "v:2:7"], ["background", "brain"])
    with pytest.raises(ValueError, match="model.prior.sizes: expected 1 foreground sizes"):
        ConstantSizes([0.3, 0.1]).table(["v:2:0"], ["background", "brain"])


def test_constant_sizes_with_callable_tags():
    table = ConstantSizes([0.25], "test_segmentation:tag_odd_slices").table(["v:2:0", "v:2:1"],
                                                                            ["background", "brain"])
    assert torch.allclose(table, torch.tensor([[1.0, 0.0], [0.75, 0.25]]))


def test_constant_sizes_with_label_free_tags_from_source_predictions():
    provider = ConstantSizes([0.25], "source_predictions", min_fraction=0.01)
    assert provider.needs == "source_predictions" and ConstantSizes([0.25]).needs == "nothing"
    # predicted sizes, not the constant used
    fractions = torch.tensor([[0.6, 0.4], [0.995, 0.005], [0.98, 0.02]])
    table = provider.table(["a", "b", "c"], ["background", "brain"], fractions)
    assert torch.allclose(table, torch.tensor([[0.75, 0.25], [1.0, 0.0], [0.75, 0.25]]))
    with pytest.raises(ValueError,
                       match=r"model.prior.min_fraction: expected a predicted fraction in \[0, 1\), got 5"):
        ConstantSizes([0.25], "source_predictions", min_fraction=5)
    with pytest.raises(ValueError, match="neither a .csv file, 'source_predictions' nor an importable"):
        ConstantSizes([0.25], "source_prediction").table(["a"], ["background", "brain"])


def tag_odd_slices(sample_id: str) -> list[str]:
    return ["brain"] if int(sample_id.rsplit(":", 1)[1]) % 2 else []


def test_image_sizes_csv_and_its_errors(tmp_path):
    sizes = tmp_path / "sizes.csv"
    sizes.write_text("id,brain\na,0.4\nb,0.0\n")
    assert torch.allclose(ImageSizes(str(sizes)).table(["b", "a"], ["background", "brain"]),
                          torch.tensor([[1.0, 0.0], [0.6, 0.4]]))
    (tmp_path / "bad.csv").write_text("id,tumour\na,0.4\n")
    with pytest.raises(ValueError, match=r"bad.csv: sizes CSV lacks columns \['brain'\]"):
        ImageSizes(str(tmp_path / "bad.csv")).table(["a"], ["background", "brain"])
    with pytest.raises(FileNotFoundError, match="missing.csv: sizes CSV not found"):
        ImageSizes(str(tmp_path / "missing.csv")).table(["a"], ["background", "brain"])


def test_source_estimate_tags_present_classes_and_averages_their_size():
    fractions = torch.tensor([[0.7, 0.3], [0.9, 0.1], [0.995, 0.005]])
    table = SourceEstimate(min_fraction=0.01).table(["a", "b", "c"], ["background", "brain"], fractions)
    assert torch.allclose(table, torch.tensor([[0.8, 0.2], [0.8, 0.2], [1.0, 0.0]]))


# metrics --------------------------------------------------------------------------------------
def test_volume_dice_and_hd95_in_mm():
    truth = torch.zeros(20, 20, 20, dtype=torch.long)
    truth[5:15, 5:15, 5:15] = 1
    pred = torch.zeros_like(truth)
    pred[6:15, 5:15, 5:15] = 1  # one 2-mm slice short on one face
    dice, hd95 = volume_scores(pred, truth, 2, (2.0, 2.0, 2.0))
    assert math.isclose(float(dice[0]), 2 * 900 / 1900, rel_tol=1e-5)
    assert math.isclose(float(hd95[0]), 2.0, rel_tol=1e-5)
    # nothing predicted: finite worst case
    dice, hd95 = volume_scores(torch.zeros_like(truth), truth, 2, (2.0, 2.0, 2.0))
    assert float(dice[0]) == 0 and math.isclose(float(hd95[0]), math.sqrt(3) * 40, rel_tol=1e-5)


def test_volume_scores_keep_one_row_per_volume_and_nan_without_label():
    scores = VolumeScores(2)
    labelled = (torch.tensor([12.0]), torch.tensor([0.5]), torch.tensor([3.0]), torch.tensor([10.0]))
    scores.update(1, 0.2, *labelled)
    scores.update(0, 0.4, torch.tensor([7.0]))
    scores.update(1, 0.2, *labelled)  # a padded duplicate
    table = scores.compute()
    assert table["index"].tolist() == [0, 1]
    assert table["dice"][0].isnan().all() and table["dice"][1].tolist() == [0.5]
    assert table["predicted_ml"][:, 0].tolist() == [7.0, 12.0]
    assert table["reference_ml"][0].isnan().all() and table["reference_ml"][1].tolist() == [10.0]


# data -----------------------------------------------------------------------------------------
def write_volume(path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return path.name


def datalist(tmp_path, image, label, **extra):
    path = tmp_path / "list.json"
    path.write_text(json.dumps({"training": [{"image": image, "label": label, **extra}]}))
    return str(path)


def load(tmp_path, image, label, spec=None):
    dm = SegmentationDataModule(datalist(tmp_path, image, label), ["background", "brain"], role="source",
                                input=spec or VolumeSpec(roi=(16, 16), spacing=(1.0, 1.0, 1.0)))
    return dm.load_volumes()


@pytest.fixture
def volume_pair(tmp_path):
    image = np.random.default_rng(0).random((16, 16, 8)).astype(np.float32)
    label = np.zeros((16, 16, 8), dtype=np.uint8)
    label[4:12, 4:12, 2:6] = 1
    return image, label


def test_datalist_errors_name_file_and_field(tmp_path, volume_pair):
    image, label = volume_pair
    img = write_volume(tmp_path / "img.nii.gz", image)
    with pytest.raises(DatalistError, match=r"'training'\[0\].label = nope.nii.gz: file not found"):
        load(tmp_path, img, "nope.nii.gz")
    with pytest.raises(DatalistError, match=r"data.datalist: .*missing.json: no such file"):
        SegmentationDataModule(str(tmp_path / "missing.json"), ["background", "brain"],
                               input=VolumeSpec()).load_volumes()
    dm = SegmentationDataModule(datalist(tmp_path, img, img), ["background", "brain"], eval_key="test",
                                input=VolumeSpec())
    with pytest.raises(DatalistError, match=r"no entries under 'test' \(keys present: \['training'\]\)"):
        dm.load_volumes()


def test_mismatched_shape_affine_label_values_and_empty_foreground_are_refused(tmp_path, volume_pair):
    image, label = volume_pair
    img = write_volume(tmp_path / "img.nii.gz", image)
    with pytest.raises(DatalistError, match=r"small.nii.gz: the label's voxel grid differs .*"
                                            r"label: grid 8x16x8.*"
                                            r"image: grid 16x16x8"):
        load(tmp_path, img, write_volume(tmp_path / "small.nii.gz", label[:8]))
    shifted = np.eye(4)
    shifted[0, 3] = 5
    with pytest.raises(DatalistError, match=r"shifted.nii.gz: the label's voxel grid differs .*"
                                            r"origin \[5.0, 0.0, 0.0\]"):
        load(tmp_path, img, write_volume(tmp_path / "shifted.nii.gz", label, shifted))
    with pytest.raises(DatalistError, match=r"label values \[3\] outside the expected integers 0..1"):
        load(tmp_path, img, write_volume(tmp_path / "three.nii.gz", label * 3))
    with pytest.raises(DatalistError, match="empty foreground"):
        load(tmp_path, img, write_volume(tmp_path / "empty.nii.gz", label * 0))


def test_slices_have_stable_ids_and_target_labels_stay_hidden(tmp_path, volume_pair):
    image, label = volume_pair
    path = datalist(tmp_path, write_volume(tmp_path / "img.nii.gz", image),
                    write_volume(tmp_path / "lab.nii.gz", label), id="case7")
    spec = VolumeSpec(roi=(16, 16), spacing=(1.0, 1.0, 1.0))
    target = SegmentationDataModule(path, ["background", "brain"], role="target", input=spec,
                                    train_view="weak")
    assert target.sample_ids() == [f"case7:2:{i}" for i in range(8)]
    assert all(target.dataset("train", "weak")[(i, 3)]["label"] == -1 for i in range(8))
    assert target.dataset("eval")[0]["label"].sum() == label.sum()  # evaluation keeps labels for reporting
    source = SegmentationDataModule(path, ["background", "brain"], role="source", input=spec)
    assert int(source.dataset("train")[3]["label"].sum()) == int(label[:, :, 3].sum())


# end to end on the real demo volumes ------------------------------------------------------------
@pytest.mark.slow
def test_entropy_prior_adapts_and_predict_writes_masks_on_the_input_grid(colin_source, tmp_path):
    recipe = ["--config", str(RECIPES / "entropy_prior_estimated.yaml"),
              f"--model.init_args.source={colin_source}", f"--trainer.default_root_dir={tmp_path}"]
    run_sfda("fit", *recipe, "--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=1")
    results = results_of(tmp_path)
    for key in ("source_only/dice", "source_only/hd95", "target/dice", "target/hd95", "train/entropy",
                "train/prior_kl"):
        assert math.isfinite(results[key]), key
    state = torch.load(tmp_path / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert state["prior_table"].shape == (128, 2)
    assert torch.allclose(state["prior_table"].sum(1), torch.ones(128))
    run_sfda("predict", *recipe, f"--ckpt_path={tmp_path / 'version_0' / 'checkpoints' / 'last.ckpt'}")
    mask = nib.load(str(tmp_path / "version_1" / "masks" / "itk.nii.gz"))
    original = nib.load(str(ROOT / "data" / "skull_stripping" / "itk" / "image.nii.gz"))
    assert mask.shape == original.shape and np.allclose(mask.affine, original.affine)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1} and np.asarray(mask.dataobj).any()
    assert (tmp_path / "version_1" / "overlays" / "itk.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.parametrize("method", ["adabn", "tent", "entropy"])
def test_baselines_run_one_epoch(method, colin_source, tmp_path):
    run_sfda("fit", "--config", str(RECIPES / f"{method}.yaml"), f"--model.init_args.source={colin_source}",
             f"--trainer.default_root_dir={tmp_path}", "--trainer.max_epochs=1",
             "--trainer.check_val_every_n_epoch=1")
    results = results_of(tmp_path)
    assert math.isfinite(results["target/dice"]) and "source_only/dice" in results
    state = torch.load(tmp_path / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    source = torch.load(colin_source, weights_only=True)["state_dict"]
    mean_key = next(k for k in source if k.endswith("running_mean"))
    if method == "adabn":  # statistics re-estimated on the target, weights untouched
        assert not torch.allclose(state[f"network.{mean_key}"], source[mean_key])
        weight = next(k for k in source if k.endswith("conv.weight"))
        assert torch.equal(state[f"network.{weight}"].contiguous(), source[weight].contiguous())
        # the report's evidence: the evaluation volume drawn source-only | adapted | reference
        overlay = tmp_path / "version_0" / "report" / "overlays" / "itk.png"
        assert overlay.stat().st_size > 1000
        page = build_report([tmp_path / "version_0"], tmp_path / "report.html").read_text()
        assert "(segmentation)" in page and "overlays: source-only | adapted | reference" in page
        assert any("dice_per_volume" in p.name for p in (tmp_path / "report_files").glob("*.png"))


@pytest.mark.slow  # a CLI subprocess run
def test_a_classification_artifact_is_refused_by_a_segmentation_method(mnist_source, tmp_path):
    done = run_sfda("fit", "--config", str(RECIPES / "entropy.yaml"),
                    f"--model.init_args.source={mnist_source}", f"--trainer.default_root_dir={tmp_path}",
                    check=False)
    assert done.returncode != 0 and "is a 'classification' artifact" in done.stderr


@pytest.mark.ddp
def test_two_process_ddp_matches_one_process(colin_source, tmp_path):
    common = ["fit", "--config", str(RECIPES / "entropy_prior_estimated.yaml"),
              f"--model.init_args.source={colin_source}", "--trainer.max_epochs=1",
              "--trainer.check_val_every_n_epoch=1", "--trainer.accelerator=cpu"]
    run_sfda(*common, f"--trainer.default_root_dir={tmp_path / 'one'}")
    run_sfda(*common, f"--trainer.default_root_dir={tmp_path / 'two'}", "--trainer.strategy=ddp",
             "--trainer.devices=2")
    one, two = (torch.load(tmp_path / n / "version_0" / "checkpoints" / "last.ckpt",
                           weights_only=True)["state_dict"] for n in ("one", "two"))
    assert torch.equal(one["prior_table"], two["prior_table"])  # label-free prior from the same source pass
    r1, r2 = results_of(tmp_path / "one"), results_of(tmp_path / "two")
    assert r1["source_only/dice"] == pytest.approx(r2["source_only/dice"], abs=1e-6)
    # synchronised BatchNorm + the same global batches: the same training trajectory up to float rounding
    assert r1["target/dice"] == pytest.approx(r2["target/dice"], abs=2e-3)
    weight = next(k for k in one if k.endswith("conv.weight"))
    assert torch.allclose(one[weight], two[weight], atol=1e-5)


@pytest.mark.slow
def test_three_d_patch_mode_trains_a_3d_unet_and_adapts(tmp_path):
    patches = ["--data.init_args.patches_per_volume=4", "--data.init_args.batch_size=2"]
    run_sfda("fit", "--config", str(RECIPES / "source.yaml"),
             f"--trainer.default_root_dir={tmp_path / 'src'}", "--trainer.max_epochs=1",
             "--trainer.check_val_every_n_epoch=1", f"--model.init_args.artifact={tmp_path}/source.pt",
             *SMALL_UNET, "--data.init_args.input.mode=3d", "--data.init_args.input.roi=[32,32,32]", *patches)
    artifact = torch.load(tmp_path / "source.pt", weights_only=True)
    assert artifact["input"]["mode"] == "3d" and artifact["architecture"]["kwargs"]["spatial_dims"] == 3
    run_sfda("fit", "--config", str(RECIPES / "entropy_prior_estimated.yaml"),
             f"--model.init_args.source={tmp_path}/source.pt",
             f"--trainer.default_root_dir={tmp_path / 'adapt'}", "--trainer.max_epochs=1",
             "--trainer.check_val_every_n_epoch=1", *patches)
    results = results_of(tmp_path / "adapt")
    assert math.isfinite(results["target/dice"]) and math.isfinite(results["train/prior_kl"])
    state = torch.load(tmp_path / "adapt" / "version_0" / "checkpoints" / "last.ckpt",
                       weights_only=True)["state_dict"]
    assert state["prior_table"].shape == (4, 2)  # one prior row per fixed patch
