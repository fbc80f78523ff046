"""Source-free active DA: budget, query strategies, sealed labels, annotators, rounds, resume, DDP."""

import json

import pytest
from conftest import ROOT, results_of, run_sfda
from kits.active import round_record, small_run


@pytest.mark.slow  # a CLI subprocess run
def test_bad_active_configs_fail_naming_the_field(mnist_source, tmp_path):
    done = run_sfda(*small_run(mnist_source, tmp_path), "--trainer.max_epochs=3", check=False)
    assert done.returncode != 0
    assert ("trainer.max_epochs: expected 2 (2 rounds of the budget x model.epochs_per_round 1), got 3"
            in done.stderr)
    done = run_sfda(*small_run(mnist_source, tmp_path), "--model.init_args.budget.total_ratio=1.5",
                    check=False)
    assert done.returncode != 0
    assert "model.budget.total_ratio: 1.5 x 600 target samples = 900 labels" in done.stderr


@pytest.mark.ddp
def test_two_processes_query_the_same_samples_as_one(tmp_path):
    # a dropout-free source (MLP backbone; its BatchNorm synchronised) so 1 and 2 processes train alike
    run_sfda("fit", "--config", str(ROOT / "recipes/digits/mnist_optdigits/source.yaml"),
             f"--trainer.default_root_dir={tmp_path}", "--trainer.max_epochs=1",
             "--model.init_args.backbone=mlp", f"--model.init_args.artifact={tmp_path}/mlp.pt",
             "--data.init_args.train_subset=3000", "--data.init_args.eval_subset=500")
    run_sfda(*small_run(tmp_path / "mlp.pt", tmp_path / "one"), "--trainer.accelerator=cpu")
    two_processes = run_sfda(*small_run(tmp_path / "mlp.pt", tmp_path / "two"), "--trainer.accelerator=cpu",
                             "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.sync_batchnorm=true")
    # values computed over all processes already (accuracy, label-free scores, rounds) draw no
    # sync_dist advice
    assert "It is recommended to use `self.log(" not in two_processes.stderr
    # round 1 comes from the same source model: identical; every rank derived it alike
    # (the run checks and would fail)
    assert round_record(tmp_path / "one", 0, 1) == round_record(tmp_path / "two", 0, 1)
    one, two = results_of(tmp_path / "one"), results_of(tmp_path / "two")
    assert two["round_2/labelled"] == 12
    assert json.loads((tmp_path / "two" / "version_0" / "run_info.json").read_text())["processes"] == 2
    # round 2 follows one epoch of training (CE, IM, anchors, mixup of the global batch) on 1 or 2 processes
    assert round_record(tmp_path / "one", 0, 2) == round_record(tmp_path / "two", 0, 2)
    assert abs(one["target/acc"] - two["target/acc"]) <= 0.01
