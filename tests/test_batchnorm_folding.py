"""Eval-mode BatchNorm folded into convolutions: same outputs, only where the order is certain, never
trained or saved."""

import pytest
import torch
from conftest import ROOT, results_of, run_sfda
from torch import nn

from sfda.models import FeatureClassifier
from sfda.models.batchnorm_folding import foldable_pairs, folded_copy
from sfda.run.speed import ChannelsLast, FoldBatchNorm


def conv_net() -> nn.Sequential:
    """Two conv + BatchNorm pairs (one conv without bias) with non-trivial running statistics, eval mode."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    for _ in range(3):  # running statistics away from (0, 1)
        net(3 * torch.randn(16, 3, 10, 10) + 1)
    return net.eval()


def test_folded_copy_gives_the_same_outputs_and_leaves_the_network_alone():
    net = conv_net()
    ChannelsLast().setup(None, net, "fit")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(5, 3, 10, 10).contiguous(memory_format=torch.channels_last)
    folded = folded_copy(net)
    assert len(foldable_pairs(net)) == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.Identity) for m in folded) == 2
    assert torch.allclose(folded(x), net(x), atol=1e-5)
    assert folded[0].weight.stride() == net[0].weight.stride()  # channels-last kept
    assert not any(p.requires_grad for p in folded.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(isinstance(net[i], nn.BatchNorm2d) for i in (1, 4))


def test_half_precision_weights_are_folded_in_float32_and_keep_their_dtype():
    net = conv_net().to(torch.bfloat16)
    x = torch.randn(5, 3, 10, 10, dtype=torch.bfloat16)
    folded = folded_copy(net)
    assert folded[0].weight.dtype == folded[0].bias.dtype == torch.bfloat16
    assert torch.allclose(folded(x).float(), net(x).float(), atol=0.1, rtol=0.05)


class Attributes(nn.Module):
    """A conv and a BatchNorm as attributes: their order is only known from ``forward``."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x))


class Reordered(nn.Sequential):
    def forward(self, x):  # runs its children in another order than listed
        return self[0](self[1](x))


def hooked() -> nn.Sequential:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    net[1].register_forward_hook(lambda module, inputs, output: None)  # someone taps the BatchNorm's output
    return net


@pytest.mark.parametrize("network", [
    nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)),  # batch stats (Tent)
    nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3)),  # BatchNorm before the conv
    nn.Sequential(nn.ConvTranspose2d(3, 4, 3), nn.BatchNorm2d(4)),
    nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(4)),
    Reordered(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)),
    Attributes(),
    hooked(),
], ids=["no-running-stats", "bn-first", "transposed", "reflect-padding", "custom-forward", "attributes",
        "hooked"])
def test_only_pairs_in_a_known_order_are_folded(network):
    assert foldable_pairs(network) == [] and folded_copy(network) is None


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
