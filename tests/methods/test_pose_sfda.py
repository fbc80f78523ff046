"""Pose methods on tiny generated figures: source training writes an artifact adaptation loads, Mean
Teacher's pseudo heatmaps follow the views, pose SFDA trains the right parts in the right order with
detached targets and the EMA into I, occlusion, predictions in original pixels, and bad input."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from kits.pose import pose_inputs, target_data, trainer

from sfda.data.benchmarks.pose_figures import JOINTS
from sfda.methods import PoseSFDA
from sfda.methods.pose_sfda import occlude


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return pose_inputs(tmp_path_factory.mktemp("pose"))


def run_sfda_steps(inputs, tmp_path, monkeypatch, steps=1, **kwargs):
    L.seed_everything(0)
    method = PoseSFDA(str(inputs["artifact"]), evaluate_source=False, occlusion=0.0, **kwargs)
    nets = {"source": method.source_net, "intermediate": method.network, "target": method.target_net}
    before = {name: {k: v.clone() for k, v in net.state_dict().items()} for name, net in nets.items()}
    backward = method.manual_backward
    seen = []

    def spy(loss):  # which networks does each backward reach?
        for net in nets.values():
            net.zero_grad(set_to_none=True)
        backward(loss)
        seen.append({name for name, net in nets.items() if any(p.grad is not None for p in net.parameters())})

    monkeypatch.setattr(method, "manual_backward", spy)
    per_step = 3 if method.source_protect else 1  # global_step counts optimizer steps
    trainer(tmp_path, max_steps=per_step * steps, limit_val_batches=0).fit(
        method, datamodule=target_data(inputs)
    )
    after = {name: net.state_dict() for name, net in nets.items()}
    return method, before, after, seen


def changed(before: dict, after: dict, prefix: str) -> bool:
    keys = [
        k for k in before if k.startswith(prefix) and before[k].is_floating_point() and "running" not in k
    ]
    return any(not torch.equal(before[k], after[k]) for k in keys)


def test_pose_sfda_updates_s_i_t_in_order_with_detached_targets_and_the_ema_into_i(
    inputs, tmp_path, monkeypatch
):
    method, before, after, seen = run_sfda_steps(inputs, tmp_path, monkeypatch)
    assert seen == [{"source"}, {"intermediate"}, {"target"}]  # S, I, T; no loss reaches another network
    # all three start as the source model: S(x) = I(x), so L_S, L_I and their gradients are 0 at step 1
    assert not changed(before["source"], after["source"], "")
    assert changed(before["target"], after["target"], "backbone") and changed(
        before["target"], after["target"], "decoder"
    )
    for key, value in before["intermediate"].items():  # I moved only by its EMA towards T (parameters)
        if key in dict(method.network.named_parameters()):
            assert torch.allclose(
                after["intermediate"][key], value.lerp(after["target"][key], 0.001), atol=1e-7
            ), key
    assert method.evaluated_network() is method.network  # I is evaluated


def test_pose_sfda_trains_s_decoder_only_once_s_and_i_differ(inputs, tmp_path, monkeypatch):
    _, before, after, seen = run_sfda_steps(inputs, tmp_path, monkeypatch, steps=2)
    assert seen == [{"source"}, {"intermediate"}, {"target"}] * 2
    assert changed(before["source"], after["source"], "decoder")
    assert not changed(before["source"], after["source"], "backbone")


def test_without_source_protect_only_t_trains_and_i_follows(inputs, tmp_path, monkeypatch):
    _, before, after, seen = run_sfda_steps(inputs, tmp_path, monkeypatch, source_protect=False)
    assert seen == [{"target"}]
    assert not changed(before["source"], after["source"], "")


def test_adaptive_occlusion_pastes_a_patch_of_the_same_image_over_each_joint():
    image = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16)
    joints = [torch.tensor([[8.0, 8.0]]), torch.tensor([[4.0, 4.0]])]
    out = occlude(
        image, joints, [True, False], 4, [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    )
    assert torch.equal(out[1], image[1])  # not chosen: untouched
    patch = out[0, :, 6:10, 6:10]
    assert not torch.equal(patch, image[0, :, 6:10, 6:10])
    sources = [image[0, :, t : t + 4, s : s + 4] for t in range(13) for s in range(13)]
    assert any(torch.equal(patch, src) for src in sources)  # a patch of the same image
    again = occlude(
        image, joints, [True, False], 4, [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    )
    assert torch.equal(out, again)


def test_source_share_sets_the_momentum_from_the_steps_and_t_is_scored_with_the_gates(inputs, tmp_path):
    """I keeps the asked share of the source weights after the run's steps; validation scores I and T; the
    occlusion gate's pass fraction and the EMA share are logged."""
    L.seed_everything(0)
    method = PoseSFDA(str(inputs["artifact"]), evaluate_source=False, source_share=0.01)
    run = trainer(tmp_path, max_epochs=2, limit_train_batches=2)
    run.fit(method, datamodule=target_data(inputs))
    updates = 2 * 2
    assert method.momentum == pytest.approx(0.01 ** (1 / updates))
    assert method.results["ema/momentum"] == pytest.approx(method.momentum)
    logged = run.callback_metrics
    assert float(logged["train/ema_source_share"]) == pytest.approx(0.01, rel=1e-4)
    assert 0.0 <= float(logged["train/occlusion_gate"]) <= 1.0
    assert "target/pck" in logged and "target_t_network/pck" in logged
    # T's terms, unweighted: at the faithful temperature 1 the contrastive term sits at log(K^2) (the docs'
    # reason it gives almost no signal); the consistency MSE of raw heatmaps is small but not zero
    assert float(logged["train/loss_pc"]) == pytest.approx(math.log(len(JOINTS) ** 2), abs=0.01)
    assert 0.0 < float(logged["train/loss_t_mse"]) < 0.1
    assert "train/loss_im" in logged


@pytest.mark.parametrize(
    "kwargs, field",
    [({"momentum": 1.0}, "model.momentum"), ({"momentum": 0.0}, "model.momentum"),
     ({"momentum": 0.9, "source_share": 0.1}, "model.source_share"),
     ({"occlusion_confidence": 1.5}, "model.occlusion_confidence"),
     ({"temperature": 0.0}, "model.temperature")],
)
def test_bad_time_constants_and_gates_are_refused_by_field(inputs, kwargs, field):
    with pytest.raises(ValueError, match=field):
        PoseSFDA(str(inputs["artifact"]), **kwargs)


def test_a_source_share_without_an_epoch_count_is_refused_by_field(inputs, tmp_path):
    method = PoseSFDA(str(inputs["artifact"]), evaluate_source=False, source_share=0.1)
    with pytest.raises(ValueError, match="trainer.max_epochs: an EMA time constant given as a share"):
        trainer(tmp_path, max_steps=3, limit_val_batches=0).fit(method, datamodule=target_data(inputs))


def test_without_target_relevant_terms_t_learns_from_the_mse_alone(inputs, tmp_path, monkeypatch):
    """The ablation: T's loss is the consistency MSE only, and only that term is logged."""
    method, before, after, _ = run_sfda_steps(inputs, tmp_path, monkeypatch, target_relevant=False)
    logged = method.trainer.callback_metrics
    assert "train/loss_pc" not in logged and "train/loss_im" not in logged
    assert float(logged["train/loss"]) == pytest.approx(float(logged["train/loss_t_mse"]))  # one step
    assert changed(before["target"], after["target"], "")
