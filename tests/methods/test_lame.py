"""LAME (``sfda.methods.lame``): on a constructed batch the neighbours pull a sample's label and a sample
without neighbours keeps its own, the assignment is the fixed point of the bound update, nothing is learned
(the checkpoint's network is the source's), a stream writes an online error for every domain through the real
CLI (reset and continual alike, as nothing is learned), and refusals by field."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from kits.bad_input import recipe, sfda
from kits.streams import stream

from sfda.methods.lame import LAME, lame_affinity, laplacian_assignment
from sfda.models import load_artifact


def constructed() -> tuple[torch.Tensor, torch.Tensor]:
    """Six samples in a tight cluster (features near e0) and one far away (e1). Five of the cluster are
    confident in class 0; the sixth leans to class 1 (p = 0.6 vs 0.4); the far one leans to class 1 too."""
    features = torch.zeros(7, 4)
    features[:6, 0] = 1.0
    features[:6, 2] = torch.linspace(0, 0.05, 6)  # distinct points of one cluster
    features[6, 1] = 1.0
    probs = torch.full((7, 3), 0.01)
    probs[:5, 0] = 0.98
    probs[5] = torch.tensor([0.4, 0.6, 0.0])
    probs[6] = torch.tensor([0.4, 0.6, 0.0])
    return features, probs.clamp_min(1e-6).log()


def test_neighbours_pull_a_samples_label_and_a_sample_without_neighbours_keeps_its_own():
    features, logits = constructed()
    kernel = lame_affinity(features, "knn", 5)
    assert kernel.sum(1).tolist() == [5.0] * 7 and not kernel.diagonal().any()
    assert kernel[5, :5].tolist() == [1.0] * 5  # the leaning sample's neighbours: the confident five
    z, steps = laplacian_assignment(logits, kernel)
    assert logits.argmax(1)[5] == 1 and z.argmax(1)[5] == 0  # pulled to its neighbours' class
    assert z.argmax(1)[:5].tolist() == [0] * 5
    # the far sample has the cluster as (distant) neighbours in a kNN graph; with them masked out it keeps
    # its own prediction exactly
    keep = torch.tensor([True] * 6 + [False])
    z_kept, _ = laplacian_assignment(logits, lame_affinity(features, "knn", 5, keep))
    assert torch.allclose(z_kept[6], logits[6].softmax(0))
    # the assignment is the fixed point of z_i = softmax(log p_i + sum_j W_ij z_j) (paper Eq. 8)
    assert 2 < steps < 100
    fixed = (logits.log_softmax(1) + kernel @ z).softmax(1)
    assert torch.allclose(fixed, z, atol=1e-5)
    # no neighbours (kernel 0): the source probabilities
    z0, _ = laplacian_assignment(logits, torch.zeros(7, 7))
    assert torch.allclose(z0, logits.softmax(1))


def test_the_rbf_affinity_takes_sigma_from_the_kth_other_neighbour():
    features, _ = constructed()
    kernel = lame_affinity(features, "rbf", 2)
    z = torch.nn.functional.normalize(features, dim=1)
    dist = torch.cdist(z, z)
    second = (dist + torch.eye(7) * 1e9).sort(1).values[:, 1].mean()
    assert torch.allclose(kernel, torch.exp(-dist ** 2 / (2 * second ** 2)), atol=1e-6)


def test_the_method_predicts_the_assignment_and_one_image_keeps_its_source_prediction(mnist_source):
    method = LAME(str(mnist_source)).eval()
    source = load_artifact(mnist_source).build().eval()
    torch.manual_seed(0)
    images = torch.randn(12, 1, 28, 28)
    with torch.no_grad():
        features, logits = source(images)
        _, corrected = method(images)
        _, alone = method(images[:1])
    z, _ = laplacian_assignment(logits, lame_affinity(features, "rbf", 5))  # the default affinity
    assert torch.allclose(corrected.exp(), z, atol=1e-5)
    knn = LAME(str(mnist_source), affinity="knn").eval()
    with torch.no_grad():
        z_knn = knn(images)[1].exp()
    expected, _ = laplacian_assignment(logits, lame_affinity(features, "knn", 5))
    assert torch.allclose(z_knn, expected, atol=1e-5)
    assert not torch.allclose(z_knn, z, atol=1e-3)
    assert torch.allclose(alone.exp(), logits[:1].softmax(1), atol=1e-5)


def test_a_stream_is_scored_for_every_domain_and_no_weight_changes(tmp_path, mnist_source):
    runs = {}
    for setting in ("reset_each_shift", "continual"):
        root = tmp_path / setting
        model = {"class_path": "sfda.methods.lame.LAME", "init_args": {"source": str(mnist_source)}}
        config = recipe(tmp_path / f"{setting}.yaml", model, stream(setting, checkpoint_every=3),
                        {"default_root_dir": str(root)})
        code, text = sfda("fit", "--config", str(config), "--report_evidence=false")
        assert code == 0, text[-3000:]
        runs[setting] = json.loads((root / "version_0" / "results.json").read_text())
        last = torch.load(root / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        source = load_artifact(mnist_source).build().state_dict()
        network = {k.removeprefix("network."): v for k, v in last.items() if k.startswith("network.")}
        assert network.keys() == source.keys() and all(torch.equal(network[k], source[k]) for k in source)
    errors = {k: v for k, v in runs["continual"].items() if k.startswith("online/") and k.endswith("/error")}
    assert set(errors) == {"online/00_gaussian_noise-5/error", "online/01_contrast-5/error", "online/error"}
    assert all(0 <= v <= 1 for v in errors.values())
    for key, value in errors.items():  # nothing is learned: a reset changes nothing
        assert runs["reset_each_shift"][key] == value


def test_refusals_by_field(tmp_path, mnist_source):
    config = recipe(tmp_path / "one.yaml", {"class_path": "sfda.methods.lame.LAME",
                                           "init_args": {"source": str(mnist_source)}},
                    stream(batch_size=1), {"default_root_dir": str(tmp_path / "one")})
    code, text = sfda("fit", "--config", str(config))
    assert code != 0 and "data.batch_size: LAME regularises each prediction with its neighbours" in text
    for field, value, expected in (("affinity", "cosine", "expected one of knn, rbf, linear"),
                                   ("knn", 0, "expected a neighbour count >= 1"),
                                   ("max_steps", 0, "expected an iteration count >= 1")):
        with pytest.raises(ValueError, match=re.escape(f"model.{field}: {expected}")):
            LAME(str(mnist_source), **{field: value})


def test_offline_fit_is_refused(tmp_path: Path, mnist_source):
    method = LAME(str(mnist_source))
    with pytest.raises(RuntimeError, match="LAME does not train"):
        method.adapt_step({"image": torch.zeros(2, 1, 28, 28), "index": torch.arange(2)})
