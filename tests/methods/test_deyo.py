"""DeYO (``sfda.methods.deyo``): the seeded patch shuffle (a permutation of whole patches, fixed by the sample
and the step, not by the batch), which samples the entropy and PLPD filters select on a constructed batch and
the step's weighted loss against a hand computation, online errors for every domain through the real CLI
(only normalisation scale and shift change),
and refusals by field."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from kits.bad_input import recipe, sfda, source_artifact
from kits.streams import stream

from sfda.methods.deyo import DeYO, deyo_weights, plpd, shuffle_patches
from sfda.models import load_artifact
from sfda.models.keyed_dropout import sample_keys

DIGITS = [str(d) for d in range(10)]
FAST = {"name": "adam", "lr": 0.05, "weight_decay": 0.0, "power": 0.0, "backbone_lr_mult": 1.0}



def fit(tmp_path: Path, name: str, source: Path, data: dict, **init) -> tuple[dict, dict]:
    config = recipe(tmp_path / f"{name}.yaml", {"class_path": "sfda.methods.deyo.DeYO",
                                                "init_args": {"source": str(source), **init}},
                    data, {"default_root_dir": str(tmp_path / name)})
    code, text = sfda("fit", "--config", str(config), "--report_evidence=false")
    assert code == 0, text[-3000:]
    run = tmp_path / name / "version_0"
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return json.loads((run / "results.json").read_text()), state


def test_the_patch_shuffle_permutes_whole_patches_keyed_by_sample_and_step():
    # a 2-channel 8 x 8 image whose 16 patches (2 x 2) are numbered 0..15
    numbers = torch.arange(16.0).view(4, 4).repeat_interleave(2, 0).repeat_interleave(2, 1)
    images = torch.stack([numbers, -numbers])[None].repeat(3, 1, 1, 1)
    keys = sample_keys(torch.tensor([5, 6, 7]), seed=0, step=3)
    out = shuffle_patches(images, 4, keys)
    for b in range(3):
        patches = out[b, 0].unfold(0, 2, 2).unfold(1, 2, 2).reshape(16, 4)
        assert (patches == patches[:, :1]).all()  # each patch moved whole
        assert sorted(patches[:, 0].tolist()) == list(range(16))  # a permutation
        assert torch.equal(out[b, 1], -out[b, 0])  # every channel moves alike
    assert not torch.equal(out[0], images[0]) and not torch.equal(out[0], out[1])
    # the same sample at the same step, in another batch: the same shuffle; at another step: another
    assert torch.equal(shuffle_patches(images[:1], 4, keys[2:]), out[2:])
    assert not torch.equal(shuffle_patches(images[:1], 4, sample_keys(torch.tensor([7]), 0, 4)), out[2:])
    # a side that is not a multiple of the grid is resized down and back: the shape stays
    assert shuffle_patches(torch.rand(2, 3, 30, 30), 4, keys[:2]).shape == (2, 3, 30, 30)


def test_plpd_and_the_weights_by_hand():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4]])
    shuffled = torch.tensor([[0.2, 0.7, 0.1], [0.1, 0.45, 0.45]])
    assert torch.allclose(plpd(probs, shuffled), torch.tensor([0.5, 0.05]))
    h, d = torch.tensor([0.3, 1.0]), torch.tensor([0.5, 0.05])
    assert torch.allclose(deyo_weights(h, d, 0.9), torch.exp(0.9 - h) + torch.exp(d))
    assert torch.allclose(deyo_weights(h, d, 0.9, reweight_plpd=False), torch.exp(0.9 - h))
    assert torch.equal(deyo_weights(h, d, 0.9, False, False), torch.ones(2))


def test_the_filters_select_confident_samples_whose_prediction_needs_their_shape(tmp_path):
    """A stand-in network predicts class 0 with the mean of the top-left 7 x 7 region as its logit: an image
    with a marker there loses its prediction when shuffled (PLPD ~0.9); a constant image keeps it (PLPD 0);
    a blank image is uniform (entropy ln 10)."""
    method = DeYO(str(source_artifact(tmp_path / "tiny.pt", DIGITS)))
    images = torch.zeros(4, 1, 28, 28)
    images[0, :, :7, :7] = 10.0  # marker: confident, shape-dependent -> selected
    images[1] = 10.0  # constant: confident, PLPD 0 -> rejected by PLPD
    # images[2] blank: uniform -> rejected by entropy
    images[3, :, :7, :7] = 4.0  # a weaker marker: selected, smaller weight

    def stand_in(x, index=None):
        logits = torch.zeros(len(x), 10)
        logits[:, 0] = x[:, 0, :7, :7].mean(dim=(1, 2))
        return torch.zeros(len(x), 2), logits

    method.forward = stand_in
    batch = {"image": images, "index": torch.arange(4)}
    assert method.shuffled(batch, torch.tensor([0, 3]))[:, 0, :7, :7].abs().sum() == 0  # the markers moved
    loss, (_, logits) = method.adapt_step(batch)
    probs = logits.softmax(1)
    h = -(probs * probs.log()).sum(1)
    assert (h[[0, 1, 3]] < 0.5 * math.log(10)).all() and h[2] == pytest.approx(math.log(10))
    d = probs[[0, 3], 0] - 0.1  # shuffled: uniform
    weights = torch.exp(0.4 * math.log(10) - h[[0, 3]]) + torch.exp(d)
    assert loss.item() == pytest.approx((weights * h[[0, 3]]).mean().item(), rel=1e-5)
    method.plpd_threshold = 0.95  # nothing passes both filters: no loss, no step
    assert method.adapt_step(batch)[0] is None


def test_a_reset_stream_scores_every_domain_and_only_normalisation_affine_changes(tmp_path, mnist_source):
    init = {"optim": FAST}
    data = stream("reset_each_shift", checkpoint_every=3)
    reset, state = fit(tmp_path, "reset", mnist_source, data, **init)
    continual, _ = fit(tmp_path, "continual", mnist_source, stream(), **init)
    errors = {k: v for k, v in reset.items() if k.startswith("online/") and k.endswith("/error")}
    assert set(errors) == {"online/00_gaussian_noise-5/error", "online/01_contrast-5/error", "online/error"}
    assert all(0 <= v <= 1 for v in errors.values())
    # the same first domain (the second is not scored as that domain alone would be: the shuffles are keyed
    # by the global step and the sample's stream index, as every random choice of a run)
    assert reset["online/00_gaussian_noise-5/error"] == continual["online/00_gaussian_noise-5/error"]
    source = load_artifact(mnist_source).build()
    original = source.state_dict()
    network = {k.removeprefix("network."): v for k, v in state.items() if k.startswith("network.")}
    moved = {k for k in network if k in original and not torch.equal(network[k], original[k])}
    norms = {n for n, m in source.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    assert moved and all(k.rsplit(".", 1)[0] in norms and k.endswith(("weight", "bias")) for k in moved)


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("entropy_margin", 0.0, "a fraction of ln C in (0, 1]"),
    ("weight_margin", 1.5, "a fraction of ln C in (0, 1]"),
    ("plpd_threshold", 1.0, "a probability difference in [-1, 1)"),
    ("patch_grid", 1, "patches per side >= 2"),
    ("patch_grid", 29, "at most the image side (28) patches per side"),
])
def test_bad_arguments_are_refused_by_field(tmp_path, field, value, expected):
    with pytest.raises(ValueError, match=re.escape(f"model.{field}: expected {expected}")):
        DeYO(str(source_artifact(tmp_path / "tiny.pt", DIGITS)), **{field: value})


def test_a_batch_of_one_is_refused_on_a_stream(tmp_path, mnist_source):
    config = recipe(tmp_path / "one.yaml", {"class_path": "sfda.methods.deyo.DeYO",
                                           "init_args": {"source": str(mnist_source)}},
                    stream(batch_size=1), {"default_root_dir": str(tmp_path / "one")})
    code, text = sfda("fit", "--config", str(config))
    assert code != 0 and "data.batch_size: DeYO normalises each batch with its own statistics" in text
