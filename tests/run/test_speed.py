"""Eval-mode BatchNorm folded into convolutions: same outputs, only where the order is certain, never
trained or saved."""


import pytest
import torch
from conftest import ROOT, results_of, run_sfda
from kits.networks import conv_net

from sfda.models import FeatureClassifier
from sfda.run.speed import ChannelsLast, FoldBatchNorm


def classifier_task():
    from sfda.tasks.classification import ClassificationTask
    from sfda.tasks.module import TaskModule

    module = TaskModule()
    module.task = ClassificationTask([str(k) for k in range(10)], None)
    module.network = FeatureClassifier(conv_net(), feature_layer="7", head_layer="8")
    return module


def test_evaluation_uses_the_folded_copy_and_training_the_real_network():
    task, callback = classifier_task(), FoldBatchNorm()
    callback.setup(None, task, "validate")
    x = torch.randn(4, 3, 10, 10)
    task.network.eval()
    features, logits = task(x)
    callback.on_validation_epoch_start(None, task)
    assert task.__dict__["_folded"] is not None
    folded_features, folded_logits = task(x)
    assert torch.allclose(folded_logits, logits, atol=1e-5) and torch.allclose(folded_features, features,
                                                                                atol=1e-5)
    assert "network.network.1.running_mean" in task.state_dict()  # the copy is not part of the state
    assert not any("_folded" in k for k in task.state_dict())
    task.network.train()  # a training forward (e.g. a step after a mid-epoch validation) uses the real one
    task(x)[1].sum().backward()
    assert task.network.network[1].weight.grad is not None
    callback.on_validation_epoch_end(None, task)
    assert task.__dict__["_folded"] is None


def test_engine_pass_folds_fresh_weights_and_restores_what_was_in_use():
    task = classifier_task()
    FoldBatchNorm().setup(None, task, "fit")
    task.network.eval()
    x = torch.randn(4, 3, 10, 10)
    with task.folded_inference():
        first = task(x)[1]
    with torch.no_grad():
        task.network.network[0].bias += 1.0  # a training step changed the weights
    with task.folded_inference():
        assert torch.allclose(task(x)[1], task.network(x)[1], atol=1e-5)
        assert not torch.allclose(task(x)[1], first)
    assert task.__dict__["_folded"] is None
    task.fold_batchnorm = False  # the recipe said fold_batchnorm: false
    with task.folded_inference():
        assert task.__dict__["_folded"] is None


@pytest.mark.slow  # two CLI subprocess runs
def test_a_run_with_folding_matches_one_without(tmp_path):
    """SHOT on the real SVHN network (six conv + BatchNorm pairs): the same pseudo-labels, accuracy and
    weights with and without folding."""
    results = []
    for fold in ("true", "false"):
        root = tmp_path / fold
        run_sfda("fit", "--config", str(ROOT / "recipes/digits/svhn_mnist/shot.yaml"),
                 f"--trainer.default_root_dir={root}", f"--fold_batchnorm={fold}", "--trainer.max_epochs=2",
                 "--data.init_args.train_subset=512", "--data.init_args.eval_subset=256",
                 "--report_evidence=false")
        checkpoint = root / "version_0" / "checkpoints" / "last.ckpt"
        weights = torch.load(checkpoint, weights_only=True)["state_dict"]
        results.append((results_of(root), weights))
    (folded, folded_weights), (plain, plain_weights) = results
    for key in ("source_only/acc", "target/acc", "engine/pseudo_label_changed_vs_argmax"):
        assert folded[key] == plain[key], key
    assert folded_weights.keys() == plain_weights.keys()
    assert all(torch.allclose(folded_weights[k].float(), plain_weights[k].float(), atol=1e-4)
               for k in plain_weights)


def test_channels_last_changes_layout_not_values():

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    x = torch.randn(2, 3, 8, 8)
    reference = net(x)
    layout = ChannelsLast()
    layout.setup(None, net, "fit")
    batch = {"image": x.clone()}
    layout.on_train_batch_start(None, net, batch, 0)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert batch["image"].is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(net(batch["image"]), reference, atol=1e-5)
    assert net.channels_last  # the engine's target passes convert their batches too


def test_channels_last_reaches_the_first_layer_of_a_one_channel_network():
    """A (4, 1, 3, 3) weight counts as channels-last already; it must still get channels-last strides,
    or the convolution's output (and the pooling after it) stays NCHW."""

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.MaxPool2d(2))
    reference = net(torch.ones(2, 1, 8, 8))
    layout = ChannelsLast()
    layout.setup(None, net, "fit")
    batch = {"image": torch.ones(2, 1, 8, 8)}
    layout.on_train_batch_start(None, net, batch, 0)
    first = net[0](batch["image"])
    assert first.is_contiguous(memory_format=torch.channels_last) and not first.is_contiguous()
    assert torch.allclose(net(batch["image"]), reference, atol=1e-6)


def test_channels_last_leaves_a_network_without_convolutions_alone():

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 4))
    layout = ChannelsLast()
    layout.setup(None, net, "fit")
    batch = {"image": torch.randn(2, 3, 4, 4)}
    layout.on_train_batch_start(None, net, batch, 0)
    assert not net.channels_last
    assert batch["image"].is_contiguous()
    assert not batch["image"].is_contiguous(memory_format=torch.channels_last)


class Flattening(torch.nn.Module):
    """A conv net that flattens as many published models do: ``.view`` (fails on channels-last) or not."""

    def __init__(self, with_view: bool):
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4 * 6 * 6, 2)
        self.with_view = with_view

    def forward(self, x):
        x = self.conv(x)
        return self.fc(x.view(x.size(0), -1) if self.with_view else x.flatten(1))


@pytest.mark.parametrize("with_view", [True, False])
def test_channels_last_stays_off_for_a_network_that_flattens_with_view(with_view, capsys):
    from types import SimpleNamespace

    from sfda.data import InputSpec

    module = torch.nn.Module()
    module.network = Flattening(with_view)
    spec = InputSpec(8, 3, (0.5,) * 3, (0.5,) * 3)
    trainer = SimpleNamespace(datamodule=SimpleNamespace(input_spec=spec), is_global_zero=True)
    layout = ChannelsLast()
    layout.setup(trainer, module, "fit")
    layout.on_fit_start(trainer, module)  # after the module's set-up, which gives the datamodule its spec
    weight = module.network.conv.weight
    assert module.channels_last is not with_view and layout.active is not with_view
    assert weight.is_contiguous(memory_format=torch.channels_last) is not with_view
    assert ("channels_last: off" in capsys.readouterr().out) is with_view
    batch = {"image": torch.randn(2, 3, 8, 8)}
    layout.on_train_batch_start(trainer, module, batch, 0)
    assert module.network(batch["image"]).shape == (2, 2)  # the run's batches now go through
