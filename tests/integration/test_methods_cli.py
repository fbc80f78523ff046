"""End-to-end: every method through the real `sfda` CLI on real digits (small subsets)."""

import json

import pytest
from conftest import ROOT, results_of, run_sfda

METHODS = ["shot", "shot_im", "nrc", "aad", "tent"]


SMALL = ["--data.init_args.train_subset=512", "--data.init_args.eval_subset=256", "--trainer.max_epochs=1"]


@pytest.mark.slow  # a CLI subprocess run
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize("method", METHODS)
def test_method_adapts_and_writes_a_run_directory(method, precision, mnist_source, tmp_path):
    run_sfda("fit", "--config", str(ROOT / f"recipes/digits/mnist_optdigits/{method}.yaml"),
             f"--model.init_args.source={mnist_source}", f"--trainer.default_root_dir={tmp_path}",
             f"--trainer.precision={precision}", *SMALL)
    run = tmp_path / "version_0"
    results = results_of(tmp_path)
    for key in ("target/acc", "target/acc_per_class", "source_only/acc", "label_free/entropy",
                "label_free/im", "label_free/snd", "wall_s"):
        assert key in results and results[key] == results[key], key  # present and not NaN
    assert 0.0 <= results["target/acc"] <= 1.0
    assert (run / "config.yaml").exists() and (run / "checkpoints" / "last.ckpt").exists() \
        and (run / "metrics.csv").exists()
    info = json.loads((run / "run_info.json").read_text())
    assert info["seed"] == 0 and info["versions"]["torch"] and info["precision"] == precision
