"""Keyed dropout: masks that depend on (seed, step, layer, global sample index) only."""

import torch
from torch import nn

from sfda.models import FeatureClassifier
from sfda.models.keyed_dropout import KeyedDropout, keyed_uniform, sample_keys


def small_network() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Dropout2d(0.5), nn.Flatten(), nn.Linear(4 * 6 * 6, 16),
                         nn.Dropout(0.3), nn.Linear(16, 3))


def test_keyed_uniforms_are_uniform_and_uncorrelated():
    u = keyed_uniform(sample_keys(torch.arange(2000), seed=0, step=5), (64,), layer=0)
    assert u.shape == (2000, 64) and 0 <= float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float((u < 0.3).float().mean()) - 0.3) < 0.005
    neighbours = torch.corrcoef(torch.stack([u[:, :-1].flatten(), u[:, 1:].flatten()]))[0, 1]
    across_samples = torch.corrcoef(torch.stack([u[:-1].flatten(), u[1:].flatten()]))[0, 1]
    assert abs(float(neighbours)) < 0.01 and abs(float(across_samples)) < 0.01


def test_a_sample_is_dropped_the_same_way_in_any_split_of_the_batch():
    network = FeatureClassifier(small_network(), "3", "5").train()
    x, index = torch.randn(8, 1, 8, 8), torch.arange(100, 108)
    keys = sample_keys(index, seed=0, step=3)
    _, whole = network(x, keys)
    # 2 processes, 4 samples each
    halves = torch.cat([network(x[:4], keys[:4])[1], network(x[4:], keys[4:])[1]])
    assert torch.allclose(whole, halves, atol=1e-6)
    shuffled = torch.randperm(8)
    assert torch.allclose(network(x[shuffled], keys[shuffled])[1], whole[shuffled], atol=1e-6)
    # a new step, new masks
    assert not torch.allclose(network(x, sample_keys(index, seed=0, step=4))[1], whole)
    assert not torch.allclose(network(x, sample_keys(index, seed=1, step=3))[1], whole)  # another run seed


def test_keyed_dropout_rate_scale_and_modes():
    layer = KeyedDropout(0.3, channelwise=False, layer=0).train()
    layer.keys = sample_keys(torch.arange(500), seed=0, step=0)
    out = layer(torch.ones(500, 200))
    assert abs(float((out == 0).float().mean()) - 0.3) < 0.01
    assert torch.allclose(out[out > 0], torch.tensor(1 / 0.7))
    channels = KeyedDropout(0.5, channelwise=True, layer=1).train()
    channels.keys = layer.keys
    maps = channels(torch.ones(500, 4, 3, 3))
    assert (maps.flatten(2).std(2) == 0).all()  # one draw per (sample, channel)
    layer.keys = None  # no keys (e.g. a mixup batch): ordinary random dropout
    assert not torch.equal(layer(torch.ones(4, 50)), layer(torch.ones(4, 50)))
    assert torch.equal(layer.eval()(torch.ones(4, 50)), torch.ones(4, 50))


def test_feature_classifier_swaps_every_dropout_and_keeps_the_weights():
    network = small_network()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    wrapped = FeatureClassifier(network, "3", "5")
    kinds = [type(m) for m in wrapped.modules()
             if isinstance(m, (nn.modules.dropout._DropoutNd, KeyedDropout))]
    assert kinds == [KeyedDropout, KeyedDropout]
    assert [(m.p, m.channelwise) for m in wrapped.modules()
            if isinstance(m, KeyedDropout)] == [(0.5, True), (0.3, False)]
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())
    assert before.keys() == network.state_dict().keys()
