"""Universal DA: class-split protocols, H-score, GLC engine pieces against references, SHOT-O/GLC runs."""

import csv
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, results_of, run_sfda

from sfda.data import ClassSplit, ClassSplitError, DigitsDataModule, InputSpec
from sfda.losses import information_maximization, masked_information_maximization
from sfda.metrics import ClassificationScores, scores_from_confusion
from sfda.pseudo_labels import (
    entropy_2means_threshold,
    kmeans,
    normalised_entropy,
    one_vs_all_pseudo_labels,
    select_num_clusters,
    silhouette_score,
)

SPEC = InputSpec(size=28, channels=1, mean=(0.5,), std=(0.5,))
SMALL = ["--data.init_args.train_subset=600", "--data.init_args.eval_subset=300"]


# class splits --------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, field", [
    ({"shared": []}, "data.split.shared"),
    ({"shared": [0, 1], "source_private": [1, 2]}, "data.split.shared and data.split.source_private overlap"),
    ({"shared": [0], "source_private": [3], "target_private": [3]},
     "data.split.source_private and data.split.target_private"),
    ({"shared": [0, 0]}, "data.split.shared: repeated"),
])
def test_bad_splits_name_the_recipe_field(kwargs, field):
    with pytest.raises(ClassSplitError, match=field):
        ClassSplit(**kwargs)


def test_settings_follow_the_class_lists():
    assert ClassSplit(shared=[0, 1]).setting == "closed"
    assert ClassSplit(shared=[0], source_private=[1]).setting == "pda"
    assert ClassSplit(shared=[0, 1], target_private=[2]).setting == "osda"
    assert ClassSplit(shared=[0], source_private=[1], unknown_dataset="fashion_mnist").setting == "opda"


def test_opda_target_keeps_shared_digits_and_mixes_in_fashion_as_unknown():
    split = ClassSplit(shared=[0, 1, 2, 3, 4, 5], source_private=[6, 7, 8, 9],
                       unknown_dataset="fashion_mnist", unknown_ratio=0.5)
    dm = DigitsDataModule("optdigits", role="target", input=SPEC, split=split)
    dm.setup()
    _, labels = dm.splits["test"]
    known = labels < 10
    assert set(labels[known].tolist()) == {0, 1, 2, 3, 4, 5} and dm.unknown_label == 10
    assert (labels == 10).sum() == round(0.5 * known.sum())
    assert dm.class_names == [str(d) for d in range(10)]  # the source model's 10 outputs
    train = dm.dataset("train")
    assert train[0]["label"] == -1  # labels stay hidden in the adaptation set


def test_target_private_classes_become_unknown_and_source_role_keeps_source_classes():
    split = ClassSplit(shared=[0, 1, 2, 3, 4, 5], target_private=[6, 7, 8, 9])
    target = DigitsDataModule("optdigits", role="target", input=SPEC, split=split)
    target.setup()
    _, labels = target.splits["test"]
    assert sorted(set(labels.tolist())) == [0, 1, 2, 3, 4, 5, 6] and target.unknown_label == 6
    source = DigitsDataModule("optdigits", role="source", input=SPEC, split=split)
    source.setup()
    assert sorted(set(source.splits["train"][1].tolist())) == [0, 1, 2, 3, 4, 5]
    assert len(source.class_names) == 6


def test_split_classes_must_exist_in_the_dataset():
    with pytest.raises(ValueError, match=r"data.split: classes \[12\] do not exist in optdigits"):
        DigitsDataModule("optdigits", split=ClassSplit(shared=[0, 12]))


# metrics ---------------------------------------------------------------------------------------
def test_h_score_matches_its_definition():
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2, -1])  # 2 known classes, unknown = 2, one unlabelled
    preds = torch.tensor([0, 1, 1, 1, 2, 2, 2, 0, 1, 0])
    metric = ClassificationScores(2)
    metric.update(preds[:5], labels[:5])
    metric.update(preds[5:], labels[5:])
    out = metric.compute()
    a_k = (1 / 2 + 2 / 3) / 2
    a_u = 2 / 4
    assert math.isclose(out["known_acc"], a_k, rel_tol=1e-6)
    assert math.isclose(out["unknown_acc"], a_u, rel_tol=1e-6)
    assert math.isclose(out["h_score"], 2 * a_k * a_u / (a_k + a_u), rel_tol=1e-6)
    assert math.isclose(out["acc"], 5 / 9, rel_tol=1e-6)


def test_closed_set_scores_are_accuracy_and_mean_per_class_accuracy():
    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, 5, 500), rng.integers(0, 5, 500)
    matrix = torch.zeros(6, 6, dtype=torch.long)
    for y, p in zip(labels, preds, strict=True):
        matrix[y, p] += 1
    out = scores_from_confusion(matrix)
    assert "h_score" not in out
    assert math.isclose(out["acc"], (labels == preds).mean(), rel_tol=1e-6)
    assert math.isclose(out["acc_per_class"], np.mean([(preds[labels == c] == c).mean() for c in range(5)]),
                        rel_tol=1e-6)


# engine pieces -------------------------------------------------------------------------------
def test_silhouette_matches_sklearn():
    from sklearn.metrics import silhouette_score as reference

    x = torch.randn(300, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 4, (300,), generator=torch.Generator().manual_seed(1))
    assert math.isclose(silhouette_score(x, labels, chunk_size=64), reference(x.numpy(), labels.numpy()),
                        rel_tol=1e-4)


def test_cluster_count_selection_finds_well_separated_clusters():
    gen = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(10, 32, generator=gen), dim=1) * 5
    x = centres.repeat_interleave(60, 0) + 0.3 * torch.randn(600, 32, generator=gen)
    chosen, scores = select_num_clusters(x, num_source_classes=10)
    assert chosen == 1.0 and max(scores, key=scores.get) == 1.0
    with pytest.raises(ValueError, match="fewer than the largest candidate cluster count 30"):
        select_num_clusters(x[:20], num_source_classes=10)


def brute_force_one_vs_all(feats, probs, coef, rho, seed):
    """Direct transcription of GLC steps 2-3 (every class evaluated for every sample)."""
    n, c = probs.shape
    feats = F.normalize(feats, dim=1)
    k, n_pos = int(c * coef), int(n / (c * coef))
    pos_sim, neg_sim, prior = torch.zeros(n, c), torch.zeros(n, c), torch.zeros(c)
    for cls in range(c):
        order = torch.argsort(probs[:, cls], descending=True, stable=True)
        top = order[:n_pos]
        proto = F.normalize(feats[top].mean(0), dim=0)
        prior[cls] = rho + (1 - rho) * probs[top, cls].mean()
        negative = torch.ones(n, dtype=torch.bool)
        negative[top] = False
        centroids, _ = kmeans(feats[negative], k, iters=100, seed=seed + cls)
        pos_sim[:, cls] = feats @ proto
        neg_sim[:, cls] = (feats @ F.normalize(centroids, dim=1).T).max(1).values
    labels = pos_sim.argmax(1)
    positive = prior[None] * pos_sim > neg_sim
    known = positive[torch.arange(n), labels]
    return labels, known


def test_one_vs_all_labels_match_a_brute_force_transcription():
    gen = torch.Generator().manual_seed(3)
    feats = torch.randn(400, 16, generator=gen)
    probs = (torch.randn(400, 6, generator=gen) * 2).softmax(1)
    out = one_vs_all_pseudo_labels(feats, probs, coefficient=0.5, rho=0.75, seed=0)
    labels, known = brute_force_one_vs_all(feats, probs, 0.5, 0.75, 0)
    assert torch.equal(out["labels"], labels) and torch.equal(out["known"], known)
    assert 0 < known.float().mean() < 1
    uniform = out["targets"][~out["known"]]
    assert torch.allclose(uniform, torch.full_like(uniform, 1 / 6))
    assert torch.equal(out["targets"][out["known"]].argmax(1), labels[out["known"]])


def test_negative_kmeans_is_fitted_on_a_seeded_sample_of_points_per_centroid(monkeypatch):
    """As faiss (the official call): at most 256 points per centroid train the negative k-means."""
    import sfda.pseudo_labels.universal as universal

    fitted = []
    real_kmeans = universal.kmeans
    monkeypatch.setattr(universal, "kmeans",
                        lambda x, k, **kw: (fitted.append(x), real_kmeans(x, k, **kw))[1])
    gen = torch.Generator().manual_seed(4)
    feats, probs = torch.randn(3000, 8, generator=gen), (torch.randn(3000, 5, generator=gen) * 2).softmax(1)
    # K_hat 5, n_pos 600: 2400 negatives per class
    first = one_vs_all_pseudo_labels(feats, probs, coefficient=1.0, seed=0)
    again = one_vs_all_pseudo_labels(feats, probs, coefficient=1.0, seed=0)
    full = one_vs_all_pseudo_labels(feats, probs, coefficient=1.0, seed=0, max_points_per_centroid=None)
    assert [x.shape[0] for x in fitted] == [256 * 5] * 10 + [2400] * 5
    assert torch.equal(first["known"], again["known"]) and torch.equal(first["labels"], full["labels"])
    normed = torch.nn.functional.normalize(feats, dim=1)
    for cls, sample in enumerate(fitted[:5]):  # distinct rows drawn from the class's negatives only
        rows = torch.cdist(sample, normed).argmin(1)
        positives = probs[:, cls].topk(600).indices
        assert rows.unique().numel() == 256 * 5 and not torch.isin(rows, positives).any()


def test_entropy_two_means_threshold_matches_sklearn():
    from sklearn.cluster import KMeans

    probs = torch.cat([torch.randn(200, 10) * 6, torch.randn(100, 10) * 0.3]).softmax(1)
    h = normalised_entropy(probs).numpy().reshape(-1, 1)
    reference = KMeans(2, init=np.array([[0.0], [1.0]]), n_init=1).fit(h).cluster_centers_.mean()
    assert math.isclose(entropy_2means_threshold(probs), reference, rel_tol=1e-4)


def test_masked_im_is_im_of_the_masked_rows():
    probs = torch.randn(12, 5).softmax(1)
    mask = torch.tensor([True, False] * 6)
    assert torch.allclose(masked_information_maximization(probs, mask), information_maximization(probs[mask]),
                          atol=1e-6)
    assert torch.allclose(masked_information_maximization(probs, torch.ones(12, dtype=torch.bool)),
                          information_maximization(probs))


# end to end ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist_0_5_source(tmp_path_factory):
    """A LeNet trained by `sfda fit` on real MNIST classes 0-5 (subset, 1 epoch)."""
    root = tmp_path_factory.mktemp("source06")
    run_sfda("fit", "--config", str(ROOT / "recipes/universal/mnist06_optdigits/source.yaml"),
             f"--trainer.default_root_dir={root}", "--trainer.max_epochs=1",
             f"--model.init_args.artifact={root}/source.pt", "--data.init_args.train_subset=3000",
             "--data.init_args.eval_subset=500")
    return root / "source.pt"


@pytest.mark.slow  # a CLI subprocess run
@pytest.mark.parametrize("method", ["glc", "shot_o"])
def test_open_set_methods_run_and_predict_unknown(method, mnist_0_5_source, tmp_path):
    recipe = str(ROOT / f"recipes/universal/mnist06_optdigits/{method}.yaml")
    run_sfda("fit", "--config", recipe, f"--model.init_args.source={mnist_0_5_source}",
             "--trainer.max_epochs=1", *SMALL, f"--trainer.default_root_dir={tmp_path}")
    results = results_of(tmp_path)
    for key in ("target/h_score", "target/known_acc", "target/unknown_acc", "source_only/h_score"):
        assert 0 <= results[key] <= 1, key
    ckpt = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    run_sfda("predict", "--config", recipe, f"--model.init_args.source={mnist_0_5_source}", *SMALL,
             f"--ckpt_path={ckpt}", f"--trainer.default_root_dir={tmp_path}")
    rows = list(csv.DictReader(open(tmp_path / "version_1" / "predictions.csv")))
    assert len(rows) == 300
    names = {r["class_name"] for r in rows}
    assert "unknown" in names and names <= {"0", "1", "2", "3", "4", "5", "unknown"}
    assert all(r["prediction"] == "6" for r in rows if r["class_name"] == "unknown")


@pytest.mark.ddp
def test_glc_global_pseudo_labels_do_not_depend_on_process_count(mnist_0_5_source, tmp_path):
    common = ["fit", "--config", str(ROOT / "recipes/universal/mnist06_optdigits/glc.yaml"),
              f"--model.init_args.source={mnist_0_5_source}", "--trainer.max_epochs=1", *SMALL]
    run_sfda(*common, f"--trainer.default_root_dir={tmp_path / 'one'}")
    run_sfda(*common, f"--trainer.default_root_dir={tmp_path / 'two'}", "--trainer.strategy=ddp",
             "--trainer.devices=2")
    one, two = (torch.load(tmp_path / d / "version_0" / "checkpoints" / "last.ckpt",
                           weights_only=True)["state_dict"] for d in ("one", "two"))
    assert float(one["cluster_coefficient"]) == float(two["cluster_coefficient"]) > 0
    # targets of the first epoch come from the source model: identical on 1 and 2 processes
    assert torch.equal(one["targets"].argmax(1), two["targets"].argmax(1))
    assert torch.allclose(one["targets"], two["targets"])
    assert two["bank.filled"].all()


def test_glc_refuses_a_non_positive_k_means_sample_size():
    from sfda.methods import GLC

    with pytest.raises(ValueError,
                       match="model.max_points_per_centroid: expected a positive count or null, got 0"):
        GLC(source="unused.pt", max_points_per_centroid=0)
