"""Universal DA: class-split protocols, H-score, GLC engine pieces against references, SHOT-O/GLC runs."""

import csv

import pytest
import torch
from conftest import ROOT, results_of, run_sfda

SMALL = ["--data.init_args.train_subset=600", "--data.init_args.eval_subset=300"]


# end to end ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist_0_5_source(tmp_path_factory):
    """A LeNet trained by `sfda fit` on real MNIST classes 0-5 (subset, 1 epoch)."""
    root = tmp_path_factory.mktemp("source06")
    run_sfda("fit", "--config", str(ROOT / "recipes/universal/mnist06_optdigits/source.yaml"),
             f"--trainer.default_root_dir={root}", "--trainer.max_epochs=1",
             f"--model.init_args.artifact={root}/source.pt", "--data.init_args.train_subset=3000",
             "--data.init_args.eval_subset=500")
    return root / "source.pt"


@pytest.mark.slow  # a CLI subprocess run
@pytest.mark.parametrize("method", ["glc", "shot_o"])
def test_open_set_methods_run_and_predict_unknown(method, mnist_0_5_source, tmp_path):
    recipe = str(ROOT / f"recipes/universal/mnist06_optdigits/{method}.yaml")
    run_sfda("fit", "--config", recipe, f"--model.init_args.source={mnist_0_5_source}",
             "--trainer.max_epochs=1", *SMALL, f"--trainer.default_root_dir={tmp_path}")
    results = results_of(tmp_path)
    for key in ("target/h_score", "target/known_acc", "target/unknown_acc", "source_only/h_score"):
        assert 0 <= results[key] <= 1, key
    ckpt = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    run_sfda("predict", "--config", recipe, f"--model.init_args.source={mnist_0_5_source}", *SMALL,
             f"--ckpt_path={ckpt}", f"--trainer.default_root_dir={tmp_path}")
    rows = list(csv.DictReader(open(tmp_path / "version_1" / "predictions.csv")))
    assert len(rows) == 300
    names = {r["class_name"] for r in rows}
    assert "unknown" in names and names <= {"0", "1", "2", "3", "4", "5", "unknown"}
    assert all(r["prediction"] == "6" for r in rows if r["class_name"] == "unknown")


@pytest.mark.ddp
def test_glc_global_pseudo_labels_do_not_depend_on_process_count(mnist_0_5_source, tmp_path):
    common = ["fit", "--config", str(ROOT / "recipes/universal/mnist06_optdigits/glc.yaml"),
              f"--model.init_args.source={mnist_0_5_source}", "--trainer.max_epochs=1", *SMALL]
    run_sfda(*common, f"--trainer.default_root_dir={tmp_path / 'one'}")
    run_sfda(*common, f"--trainer.default_root_dir={tmp_path / 'two'}", "--trainer.strategy=ddp",
             "--trainer.devices=2")
    one, two = (torch.load(tmp_path / d / "version_0" / "checkpoints" / "last.ckpt",
                           weights_only=True)["state_dict"] for d in ("one", "two"))
    assert float(one["cluster_coefficient"]) == float(two["cluster_coefficient"]) > 0
    # targets of the first epoch come from the source model: identical on 1 and 2 processes
    assert torch.equal(one["targets"].argmax(1), two["targets"].argmax(1))
    assert torch.allclose(one["targets"], two["targets"])
    assert two["bank.filled"].all()


def test_glc_refuses_a_non_positive_k_means_sample_size():
    from sfda.methods import GLC

    with pytest.raises(ValueError,
                       match="model.max_points_per_centroid: expected a positive count or null, got 0"):
        GLC(source="unused.pt", max_points_per_centroid=0)
