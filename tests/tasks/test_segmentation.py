"""Segmentation adaptation: losses, priors, volume metrics, datalist checks, and the CLI on the real
Colin27 -> ITK skull-stripping demo volumes (cut down: a small UNet, one epoch)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import ROOT, SMALL_UNET, results_of, run_sfda

from sfda.report.command import build_report

RECIPES = ROOT / "recipes" / "segmentation" / "colin27_itk"


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
