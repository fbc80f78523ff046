"""MEMO (``sfda.methods.memo``): the marginal entropy against a hand computation, the seeded AugMix views,
the episodic reset (every point is adapted from the source weights, and predicted by the network updated on
it), online errors for every domain through the real CLI (episodic: every setting predicts alike), and
refusals by field."""

from __future__ import annotations

import json
import math
import re

import lightning as L
import pytest
import torch
from kits.bad_input import digit_images, folder_data, recipe, sfda, source_artifact

from sfda.data.stream import CorruptedImages, StreamDataModule
from sfda.methods.memo import MEMO, augmix, marginal_entropy
from sfda.models import load_artifact
from sfda.tasks.optim import Optim

DIGITS = [str(d) for d in range(10)]
FAST = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "power": 0.0,
        "backbone_lr_mult": 1.0}


def test_the_marginal_entropy_is_the_entropy_of_the_mean_prediction():
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.0, 3.0, 0.0, 0.0], [-1.0, -1.0, 4.0, 0.0]])
    probs = logits.softmax(1)
    mean = probs.mean(0)
    entropy, log_mean = marginal_entropy(logits)
    assert entropy.item() == pytest.approx(-(mean * mean.log()).sum().item(), rel=1e-6)
    assert torch.allclose(log_mean, mean.log())
    # confident but disagreeing views have a high marginal entropy; agreeing ones a low one
    assert marginal_entropy(torch.eye(4) * 20)[0].item() == pytest.approx(math.log(4), rel=1e-6)
    assert marginal_entropy(torch.tensor([[20.0, 0, 0, 0]] * 3))[0].item() < 1e-6


def test_the_views_are_seeded_by_their_key():
    torch.manual_seed(0)
    image = torch.rand(1, 28, 28) * 2 - 1  # normalised with mean 0.5, std 0.5
    views = [augmix(image, (0.5,), (0.5,), key) for key in (1, 1, 2)]
    assert torch.equal(views[0], views[1]) and not torch.equal(views[0], views[2])
    assert views[0].shape == image.shape and views[0].min() >= -1 and views[0].max() <= 1
    assert not torch.equal(views[0], image)


def test_episodic_memo_adapts_each_point_from_the_source_and_predicts_it_after(tmp_path, mnist_source):
    for episodic in (True, False):
        method = MEMO(str(mnist_source), optim=Optim(**FAST), augmentations=4, episodic=episodic)
        source = {k: v.clone() for k, v in method.network.state_dict().items()}
        starts, outputs, images = [], [], []
        adapt_point, adapt_step = method.adapt_point, method.adapt_step

        def recording_point(image, index, adapt_point=adapt_point, method=method, starts=starts):
            starts.append({k: v.clone() for k, v in method.network.state_dict().items()})
            return adapt_point(image, index)

        def recording_step(batch, adapt_step=adapt_step, outputs=outputs, images=images):
            images.append(batch["image"][-1:].clone())
            outputs.append(adapt_step(batch)[1][1])
            return None, (None, outputs[-1])

        method.adapt_point, method.adapt_step = recording_point, recording_step
        method.training_step = lambda batch, i, method=method: recording_step(batch)[0]
        data = StreamDataModule(CorruptedImages("mnist", corruptions=["contrast"], subset=6), batch_size=3)
        trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                            default_root_dir=tmp_path / str(episodic))
        trainer.fit(method, datamodule=data)
        assert len(starts) == 6
        same = [all(torch.equal(s[k], source[k]) for k in source) for s in starts]
        assert same == ([True] * 6 if episodic else [True] + [False] * 5)
        # the last point is predicted by the network updated on it
        assert any(not torch.equal(v, source[k]) for k, v in method.network.state_dict().items())
        if episodic:
            method.counted_as(1)
            with torch.no_grad():
                after = method.network.eval()(images[-1])[1]
            assert torch.allclose(after, outputs[-1][-1:], atol=1e-5)


def stream(setting: str, **extra) -> dict:
    source = {"class_path": "sfda.data.CorruptedImages",
              "init_args": {"dataset": "mnist", "corruptions": ["gaussian_noise", "contrast"], "subset": 12}}
    return {"class_path": "sfda.data.StreamDataModule",
            "init_args": {"source": source, "setting": setting, **extra}}


def test_every_domain_is_scored_and_episodic_memo_ignores_setting_and_batch(tmp_path, mnist_source):
    """Episodic MEMO predicts each point from the source: a reset stream of batches of one and a continual
    stream of batches of six predict alike (each view is keyed by the point's index and the step, one step a
    point in both)."""
    runs = {}
    for setting, size in (("reset_each_shift", 1), ("continual", 6)):
        model = {"class_path": "sfda.methods.memo.MEMO", "init_args": {
            "source": str(mnist_source), "augmentations": 4, "flip": False, "optim": FAST}}
        config = recipe(tmp_path / f"{setting}.yaml", model, stream(setting, batch_size=size),
                        {"default_root_dir": str(tmp_path / setting)})
        code, text = sfda("fit", "--config", str(config), "--report_evidence=false")
        assert code == 0, text[-3000:]
        results = json.loads((tmp_path / setting / "version_0" / "results.json").read_text())
        runs[setting] = {k: v for k, v in results.items() if k.startswith("online/") and k.endswith("/error")}
    assert set(runs["continual"]) == {"online/00_gaussian_noise-5/error", "online/01_contrast-5/error",
                                      "online/error"}
    assert runs["continual"] == runs["reset_each_shift"]


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("augmentations", 0, "a view count >= 1"), ("steps", 0, "an update count >= 1"),
    ("prior", -1.0, "a prior strength N >= 0"), ("severity", 0.0, "an AugMix severity in [0.1, 10]"),
])
def test_bad_arguments_are_refused_by_field(tmp_path, field, value, expected):
    with pytest.raises(ValueError, match=re.escape(f"model.{field}: expected {expected}")):
        MEMO(str(source_artifact(tmp_path / "tiny.pt", DIGITS)), **{field: value})


def test_an_offline_fit_of_episodic_memo_is_refused_by_field(tmp_path):
    digit_images(tmp_path / "target", DIGITS, per_class=1)
    source = source_artifact(tmp_path / "tiny.pt", DIGITS)
    config = recipe(tmp_path / "memo.yaml", {"class_path": "sfda.methods.memo.MEMO",
                                            "init_args": {"source": str(source), "augmentations": 2}},
                    folder_data(tmp_path / "target"), {"default_root_dir": str(tmp_path / "runs")})
    code, text = sfda("fit", "--config", str(config))
    assert code != 0 and "model.episodic: an episodic MEMO returns to the source before every point" in text
    assert load_artifact(source) is not None
