"""End-to-end: every method through the real `sfda` CLI on real digits (small subsets)."""

import pytest
from conftest import ROOT, results_of, run_sfda


@pytest.mark.slow  # a CLI subprocess run
def test_source_only_test_and_predict_write_results(mnist_source, tmp_path):
    recipe = str(ROOT / "recipes/digits/mnist_optdigits/source_only.yaml")
    run_sfda("test", "--config", recipe, f"--model.init_args.source={mnist_source}",
             f"--trainer.default_root_dir={tmp_path}")
    # a real MNIST model on real optdigits is far above chance
    assert results_of(tmp_path)["target/acc"] > 0.3
    run_sfda("predict", "--config", recipe, f"--model.init_args.source={mnist_source}",
             f"--trainer.default_root_dir={tmp_path}")
    lines = (tmp_path / "version_1" / "predictions.csv").read_text().splitlines()
    assert lines[0] == "index,prediction,class_name,confidence" and len(lines) == 1 + 359
