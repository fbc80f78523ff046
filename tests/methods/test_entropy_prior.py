"""Segmentation adaptation: losses, priors, volume metrics, datalist checks, and the CLI on the real
Colin27 -> ITK skull-stripping demo volumes (cut down: a small UNet, one epoch)."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import ROOT, results_of, run_sfda

RECIPES = ROOT / "recipes" / "segmentation" / "colin27_itk"


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
