"""Pose through the real CLI: pose SFDA's first step on 1 and 2 processes agrees, a resumed run ends like
an uninterrupted one (three networks, three optimisers, the EMA), bf16 runs."""

from __future__ import annotations

import pytest
import torch
from conftest import ROOT, results_of, run_sfda
from kits.pose import pose_artifact

from sfda.data.benchmarks.pose_figures import generate


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    root = tmp_path_factory.mktemp("pose_cli")
    return {"photo": generate(root, "photo", "train", count=16),
            "test": generate(root, "photo", "test", count=6), "artifact": pose_artifact(root / "pose.pt")}


def recipe(figures, *extra: str) -> list[str]:
    return ["fit", "--config", str(ROOT / "recipes/pose/figures/pose_sfda.yaml"),
            f"--model.init_args.source={figures['artifact']}", f"--data.init_args.train=[{figures['photo']}]",
            f"--data.init_args.eval=[{figures['test']}]", "--data.init_args.batch_size=8",
            "--data.init_args.eval_batch_size=4", "--trainer.accelerator=cpu",
            "--model.init_args.occlusion_confidence=0.0", *extra]  # occlusion on: its draws must agree too


def final_state(root, version: int = 0) -> dict:
    return torch.load(root / f"version_{version}" / "checkpoints" / "last.ckpt", weights_only=True)


def worst_difference(a: dict, b: dict) -> float:
    keys = [k for k, v in a.items() if v.is_floating_point()]
    assert {k.split(".")[0] for k in keys} >= {"network", "source_net", "target_net"}
    return max((a[k] - b[k]).abs().max().item() for k in keys)


@pytest.mark.ddp
def test_two_process_pose_sfda_takes_the_same_first_step_as_one_process(figures, tmp_path):
    """Adam's first update is lr x sign(gradient) per element, so it shows whether the gradients of the
    global batch agree. All three networks start as the source model: S(x) = I(x), L_S = L_I = 0, S and I
    do not move and T takes the step. Later steps cannot be compared exactly: L_S falls to ~1e-16, where
    float32 rounding is 23% of its gradient (measured; see docs/guides/pose.md), and Adam turns that
    rounding into lr-sized steps whose signs depend on the reduction order, hence on the process count."""
    common = recipe(figures, "--trainer.max_steps=3", "--trainer.limit_val_batches=0",
                    "--model.init_args.evaluate_source=false")  # three optimiser steps: one training step
    run_sfda(*common, f"--trainer.default_root_dir={tmp_path / 'one'}")
    run_sfda(*common, f"--trainer.default_root_dir={tmp_path / 'two'}", "--trainer.strategy=ddp",
             "--trainer.devices=2")
    one, two = final_state(tmp_path / "one")["state_dict"], final_state(tmp_path / "two")["state_dict"]
    source = torch.load(figures["artifact"], weights_only=True)["state_dict"]
    lr = 1e-4  # T's Adam learning rate (the recipe's)
    moved = disagree = 0
    for key, start in source.items():
        if not start.is_floating_point() or "running" in key:
            continue
        assert torch.equal(one[f"source_net.{key}"], two[f"source_net.{key}"])  # S: no step in either
        step_one, step_two = one[f"target_net.{key}"] - start, two[f"target_net.{key}"] - start
        moved += int((step_one.abs() > lr / 2).sum())
        disagree += int(((step_one - step_two).abs() > lr / 2).sum())
    assert moved > 100_000 and disagree / moved < 1e-3, (moved, disagree)


@pytest.mark.slow  # CLI subprocess runs
def test_a_resumed_pose_sfda_run_ends_like_an_uninterrupted_one(figures, tmp_path):
    common = recipe(figures, "--trainer.max_epochs=2")
    run_sfda(*common, f"--trainer.default_root_dir={tmp_path / 'full'}")
    run_sfda(*common, f"--trainer.default_root_dir={tmp_path / 'part'}",
             "--trainer.callbacks+=sfda.run.stops.StopAfterEpochs", "--trainer.callbacks.epochs=1")
    last = tmp_path / "part" / "version_0" / "checkpoints" / "last.ckpt"
    run_sfda(*common, f"--trainer.default_root_dir={tmp_path / 'part'}", f"--ckpt_path={last}")
    full, resumed = final_state(tmp_path / "full"), final_state(tmp_path / "part", 1)
    assert worst_difference(full["state_dict"], resumed["state_dict"]) == 0.0
    assert len(full["optimizer_states"]) == len(resumed["optimizer_states"]) == 3
    for a, b in zip(full["optimizer_states"], resumed["optimizer_states"], strict=True):
        for state_a, state_b in zip(a["state"].values(), b["state"].values(), strict=True):
            assert all(torch.equal(state_a[k], state_b[k]) for k in ("exp_avg", "exp_avg_sq"))


@pytest.mark.slow  # a CLI subprocess run
def test_pose_sfda_runs_in_bf16_mixed_precision(figures, tmp_path):
    run_sfda(*recipe(figures, "--trainer.max_epochs=1", "--trainer.precision=bf16-mixed"),
             f"--trainer.default_root_dir={tmp_path}")
    results = results_of(tmp_path)
    assert 0 <= results["target/pck"] <= 1 and torch.isfinite(torch.tensor(results["train/loss"]))
