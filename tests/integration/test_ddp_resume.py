"""DDP (2 CPU processes, launched as a subprocess) and exact resume."""

import numpy as np
import pytest
import torch
from conftest import ROOT, results_of, run_sfda

SMALL = ["--data.init_args.train_subset=512", "--data.init_args.eval_subset=256"]


def checkpoint_state(run_root, name="last.ckpt"):
    return torch.load(run_root / "version_0" / "checkpoints" / name, weights_only=True)["state_dict"]


@pytest.mark.ddp
@pytest.mark.parametrize("method", ["shot", "nrc", "aad", "tent"])
def test_two_process_ddp_matches_one_process(method, mnist_source, tmp_path):
    common = ["fit", "--config", str(ROOT / f"recipes/digits/mnist_optdigits/{method}.yaml"),
              f"--model.init_args.source={mnist_source}", "--trainer.max_epochs=1",
              "--trainer.accelerator=cpu", *SMALL]
    run_sfda(*common, f"--trainer.default_root_dir={tmp_path / 'one'}")
    run_sfda(*common, f"--trainer.default_root_dir={tmp_path / 'two'}", "--trainer.strategy=ddp",
             "--trainer.devices=2")
    one, two = checkpoint_state(tmp_path / "one"), checkpoint_state(tmp_path / "two")
    assert results_of(tmp_path / "two")["source_only/acc"] == results_of(tmp_path / "one")["source_only/acc"]
    if method == "shot":  # pseudo-labels of the first epoch: from the same source model on 1 or 2 processes
        assert (one["pseudo_labels"] >= 0).all() and torch.equal(one["pseudo_labels"], two["pseudo_labels"])
    if method in ("nrc", "aad"):  # every rank wrote every row: the bank is complete and finite
        assert two["bank.filled"].all() and torch.isfinite(two["bank.scores"]).all()
        assert torch.allclose(two["bank.scores"].sum(1), torch.ones(512), atol=1e-3)
    # the same global batches, BatchNorm of the global batch (the CLI's default) and dropout keyed by sample:
    # the same training trajectory up to float rounding of the all-reduces
    weights = [k for k, v in one.items() if v.is_floating_point() and k.startswith("network.")
               and "running" not in k]
    assert weights and all(torch.allclose(one[k], two[k], atol=1e-4) for k in weights), \
        max((one[k] - two[k]).abs().max().item() for k in weights)
    # Tent predicts with the statistics of each process's share of the evaluation batch (by design)
    if method != "tent":
        assert results_of(tmp_path / "two")["target/acc"] == pytest.approx(
            results_of(tmp_path / "one")["target/acc"], abs=1 / 256)
    # the report's evidence: the last validation's rows where every process agrees they still hold, every
    # sample once and in order, so its accuracy is the run's
    for run in ("one", "two"):
        evidence = np.load(tmp_path / run / "version_0" / "report" / "classification.npz")
        assert len(evidence["label"]) == 256
        assert (evidence["after_pred"] == evidence["label"]).mean() == pytest.approx(
            results_of(tmp_path / run)["target/acc"], abs=1e-6)


@pytest.mark.slow  # a CLI subprocess run
def test_resumed_run_ends_like_an_uninterrupted_one(mnist_source, tmp_path):
    # weak augmentation on, so the per-sample augmentation seeds are part of what must survive the restart
    recipe = ["fit", "--config", str(ROOT / "recipes/digits/mnist_optdigits/nrc.yaml"),
              f"--model.init_args.source={mnist_source}", "--data.init_args.train_view=weak", *SMALL]
    run_sfda(*recipe, "--trainer.max_epochs=2", f"--trainer.default_root_dir={tmp_path / 'full'}")
    # stopped after epoch 1 of 2 (same config, so the same lr schedule), then resumed
    run_sfda(*recipe, "--trainer.max_epochs=2", f"--trainer.default_root_dir={tmp_path / 'part'}",
             "--trainer.callbacks+=sfda.run.stops.StopAfterEpochs", "--trainer.callbacks.epochs=1")
    last = tmp_path / "part" / "version_0" / "checkpoints" / "last.ckpt"
    run_sfda(*recipe, "--trainer.max_epochs=2", f"--trainer.default_root_dir={tmp_path / 'part'}",
             f"--ckpt_path={last}")
    full = checkpoint_state(tmp_path / "full")
    resumed = torch.load(tmp_path / "part" / "version_1" / "checkpoints" / "last.ckpt",
                         weights_only=True)["state_dict"]
    assert torch.equal(full["bank.features"], resumed["bank.features"])
    assert torch.equal(full["bank.scores"], resumed["bank.scores"])
    assert results_of(tmp_path / "full")["target/acc"] == results_of(tmp_path / "part", 1)["target/acc"]


@pytest.mark.slow  # a CLI subprocess run
def test_a_run_that_fails_keeps_its_last_good_checkpoint(mnist_source, tmp_path):
    recipe = ["fit", "--config", str(ROOT / "recipes/digits/mnist_optdigits/shot.yaml"),
              f"--model.init_args.source={mnist_source}", *SMALL, "--trainer.max_epochs=3",
              f"--trainer.default_root_dir={tmp_path}",
              "--trainer.callbacks+=kits.faults.PoisonWeightsAtEpoch", "--trainer.callbacks.epoch=1"]
    done = run_sfda(*recipe, env={"PYTHONPATH": str(ROOT / "tests")}, check=False)
    assert done.returncode != 0
    assert "loss is nan at epoch 1" in done.stderr and "last good checkpoint is kept" in done.stderr
    last = torch.load(tmp_path / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0  # written at the end of the good epoch, not overwritten by the failing one
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    # and it resumes: the run continues from epoch 1 without the fault
    run_sfda(*recipe[:-2], f"--ckpt_path={tmp_path / 'version_0' / 'checkpoints' / 'last.ckpt'}")
    assert results_of(tmp_path, 1)["epochs"] == 3


def test_the_cli_closes_a_gloo_process_group_it_leaves_open(tmp_path):
    # Lightning destroys only NCCL groups at exit; an open gloo group aborts the interpreter at exit
    # now and then
    from sfda.cli import close_process_group

    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                                         world_size=1)
    close_process_group()
    assert not torch.distributed.is_initialized()
    close_process_group()  # a no-op outside DDP
