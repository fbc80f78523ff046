"""Hospital formats: NRRD, MetaImage and DICOM series read into the NIfTI convention, masks written back in
them on the input's grid, per-volume CSV, and the bad input of each format. The real-geometry cases
convert the Colin27 head (and the ITK subject, LSA-oriented) inside the test with SimpleITK."""

from __future__ import annotations

import pytest
from conftest import ROOT, run_sfda


@pytest.mark.slow  # a CLI subprocess run
def test_mask_format_on_a_classification_run_is_refused(mnist_source, tmp_path):
    done = run_sfda(
        "predict",
        "--config",
        str(ROOT / "recipes/digits/mnist_optdigits/source_only.yaml"),
        f"--model.init_args.source={mnist_source}",
        f"--trainer.default_root_dir={tmp_path}",
        "--predict.mask_format=same",
        check=False,
    )
    assert done.returncode != 0
    assert "predict.mask_format = same: only segmentation writes masks" in done.stderr
