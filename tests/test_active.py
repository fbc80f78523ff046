"""Source-free active DA: budget, query strategies, sealed labels, annotators, rounds, resume, DDP."""

import csv
import json

import lightning as L
import numpy as np
import pytest
import torch
from conftest import ROOT, results_of, run_sfda

from sfda.active import Budget, FileAnnotator, LabelsFileError, contrastive_scores, margin, query_lowest
from sfda.active.annotators import read_labels_file
from sfda.data import DigitsDataModule
from sfda.data.active import SealedLabels
from sfda.methods import LFTL

RECIPE = str(ROOT / "recipes/active/svhn_mnist/lftl_5pct.yaml")


def small_run(source, root, *extra):
    """The LFTL recipe on real optdigits (600-sample pool) with the MNIST LeNet source: 2 rounds x 1 epoch, 6
    labels a round."""
    return ["fit", "--config", RECIPE, f"--model.init_args.source={source}",
            "--data.init_args.dataset=optdigits", "--data.init_args.train_subset=600",
            "--data.init_args.eval_subset=300", "--model.init_args.epochs_per_round=1",
            "--trainer.max_epochs=2", "--model.init_args.budget.total_ratio=0.02",
            "--model.init_args.budget.round_ratio=0.01", f"--trainer.default_root_dir={root}", *extra]


def round_record(root, version, round_index):
    with open(root / f"version_{version}" / "rounds" / f"round_{round_index:02d}.csv") as handle:
        return [(int(r["index"]), int(r["label"])) for r in csv.DictReader(handle)]


# budget and query strategies ------------------------------------------------------------------------
def test_budget_spreads_labels_over_rounds_and_the_last_round_takes_the_rest():
    assert Budget(0.05, 0.005).per_round(1000) == [5] * 10
    assert Budget(0.05, 0.02).per_round(1000) == [20, 20, 10]
    with pytest.raises(ValueError,
                       match=r"total_ratio: 1.5 x 100 target samples = 150 labels, more than the pool holds"):
        Budget(1.5, 0.5).per_round(100)
    with pytest.raises(ValueError, match=r"round_ratio: 0.001 x 100 target samples rounds to 0 labels"):
        Budget(0.01, 0.001).per_round(100)
    with pytest.raises(ValueError, match="round_ratio <= total_ratio"):
        Budget(0.01, 0.05).per_round(1000)


def test_contrastive_scores_match_a_numpy_reference():
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(50, 4, generator=gen).softmax(1)
    previous = torch.rand(50, 4, generator=gen).softmax(1)
    alpha, kappa, lam = 0.03, 10, 0.1
    p, q = probs.numpy().astype(np.float64), previous.numpy().astype(np.float64)
    u = p + alpha * (p - q)
    top = np.sort(u, axis=1)
    U = top[:, -1] - top[:, -2]
    voters = np.argsort(-U, kind="stable")[:kappa]
    counts = np.bincount(p.argmax(1)[voters], minlength=4)
    expected = U / U.max() + lam * (counts / counts.max())[p.argmax(1)]
    got = contrastive_scores(probs, previous, alpha, kappa, lam)
    assert np.allclose(got.numpy(), expected, atol=1e-6)
    # round 1 (previous = current): plain margin, rescaled, plus the balance term
    assert torch.allclose(contrastive_scores(probs, probs, alpha, kappa, 0.0),
                          margin(probs) / margin(probs).max())


def test_classes_the_model_is_sure_about_are_queried_less():
    # two samples with the same margin: the one predicted as the class most confident samples
    # share scores higher
    probs = torch.tensor([[0.9, 0.1, 0.0]] * 8 + [[0.55, 0.45, 0.0], [0.0, 0.45, 0.55]])
    scores = contrastive_scores(probs, probs, kappa=8, balance=0.1)
    assert scores[8] > scores[9]
    assert query_lowest(scores, 1).tolist() == [9]


def test_query_lowest_is_stable_and_refuses_more_than_the_pool():
    assert query_lowest(torch.tensor([0.5, 0.1, 0.1, 0.9]), 2).tolist() == [1, 2]
    with pytest.raises(ValueError, match="cannot query 5 samples from a pool of 4"):
        query_lowest(torch.zeros(4), 5)


# sealed labels and annotators --------------------------------------------------------------------------
def test_target_training_labels_are_sealed_and_only_revealed_on_request():
    dm = DigitsDataModule("optdigits", role="target", train_subset=100, input=None)
    dm.setup()
    sealed = dm.splits["train"][1]
    assert isinstance(sealed, SealedLabels) and len(sealed) == 100
    for read in (lambda: np.asarray(sealed), lambda: sealed[0], lambda: list(sealed)):
        with pytest.raises(PermissionError, match="sealed"):
            read()
    assert dm.reveal_labels([3, 7]).shape == (2,) and sealed.revealed == [3, 7]


def test_labels_file_errors_name_the_file_and_line(tmp_path):
    images = {5: "/x/5.png", 9: "/x/9.png"}
    names = ["cat", "dog"]
    path = tmp_path / "labels.csv"
    cases = {"index,label\n5,dog\n7,cat\n": r"labels.csv:3: index '7' was not queried",
             "index,label\n5,bird\n": r"labels.csv:2: label 'bird' is neither a class id in \[0, 2\)",
             "index,label\n5,1\n9,0\n5,0\n": r"labels.csv:4: sample 5 is labelled twice \(first on line 2\)",
             "id,class\n5,1\n": r"labels.csv:1: expected the header",
             "image,label\n/y/1.png,cat\n": r"labels.csv:2: image '/y/1.png' was not queried"}
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(LabelsFileError, match=message):
            read_labels_file(path, images, names)
        assert path.read_text() == text  # the person's file is never rewritten
    path.write_text("image,label\n/x/9.png,dog\n5,\n")
    with pytest.raises(LabelsFileError, match="labels.csv:3: image '5' was not queried"):
        read_labels_file(path, images, names)
    path.write_text("index,label\n9,dog\n5,0\n")
    assert read_labels_file(path, images, names) == {9: 1, 5: 0}


def test_file_annotator_stops_cleanly_until_every_queried_sample_is_labelled(tmp_path):
    dm = DigitsDataModule("optdigits", role="target", train_subset=50)
    dm.setup()
    annotator = FileAnnotator(str(tmp_path / "ann"))
    with pytest.raises(SystemExit) as stopped:
        annotator.annotate(1, np.array([4, 2]), dm, tmp_path, True)
    assert stopped.value.code == 0 and "2 of 2 queried samples still need a label" in stopped.value.message
    rows = list(csv.DictReader(open(tmp_path / "ann" / "round_01" / "to_label.csv")))
    assert [r["index"] for r in rows] == ["4", "2"]
    assert all((tmp_path / "ann" / "round_01" / "images" / f"{i}.png").exists() for i in (4, 2))
    (tmp_path / "ann" / "round_01" / "labels.csv").write_text("index,label\n2,7\n")
    with pytest.raises(SystemExit, match="0"):
        annotator.annotate(1, np.array([4, 2]), dm, tmp_path, True)
    (tmp_path / "ann" / "round_01" / "labels.csv").write_text(f"image,label\n{rows[0]['image']},3\n2,7\n")
    # mixing keys is refused, line named
    with pytest.raises(LabelsFileError, match=r"labels.csv:3: image '2' was not queried"):
        annotator.annotate(1, np.array([4, 2]), dm, tmp_path, True)
    (tmp_path / "ann" / "round_01" / "labels.csv").write_text("index,label\n2,7\n4,3\n")
    assert annotator.annotate(1, np.array([4, 2]), dm, tmp_path, True).tolist() == [3, 7]


# rounds inside Lightning ------------------------------------------------------------------------------
@pytest.mark.slow  # a CLI subprocess run
def test_only_queried_samples_have_their_labels_revealed(mnist_source, tmp_path):
    torch.manual_seed(0)
    dm = DigitsDataModule("optdigits", role="target", train_subset=400, eval_subset=200, batch_size=32,
                          train_view="test")
    model = LFTL(str(mnist_source), budget=Budget(0.03, 0.015), epochs_per_round=1, kappa=50)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    queried = (model.query_round >= 0).nonzero().flatten().tolist()
    assert len(queried) == 12 and sorted(model.query_round[queried].tolist()) == [1] * 6 + [2] * 6
    assert sorted(dm.splits["train"][1].revealed) == sorted(queried)  # nothing else was ever revealed
    assert model.anchors.filled.nonzero().flatten().tolist() == sorted(queried)
    assert "round_2/target/acc" in model.results and "round_1/query_s" in model.results


@pytest.mark.slow  # a CLI subprocess run
def test_a_person_labels_between_rounds_and_the_run_ends_like_an_uninterrupted_one(mnist_source, tmp_path):
    run_sfda(*small_run(mnist_source, tmp_path / "stored"))
    stored = results_of(tmp_path / "stored")
    people = tmp_path / "people"
    args = small_run(mnist_source, people, "--model.init_args.annotator=sfda.active.FileAnnotator")
    truth = dict(round_record(tmp_path / "stored", 0, 1) + round_record(tmp_path / "stored", 0, 2))

    def label(round_index, keep=None):
        folder = people / "annotations" / f"round_{round_index:02d}"
        rows = list(csv.DictReader(open(folder / "to_label.csv")))[:keep]
        (folder / "labels.csv").write_text(
            "index,label\n" + "".join(f"{r['index']},{truth[int(r['index'])]}\n" for r in rows))

    first = run_sfda(*args)  # round 1 waits for labels: clean exit, nothing trained
    assert "Round 1: 6 of 6 queried samples still need a label" in first.stderr
    assert not (people / "version_0" / "results.json").exists()
    label(1)
    second = run_sfda(*args)  # round 1 trains, round 2 waits
    last = people / "version_1" / "checkpoints" / "last.ckpt"
    assert "Round 2: 6 of 6" in second.stderr and f"--ckpt_path={last}" in second.stderr
    label(2, keep=2)  # partly labelled: still waits, and points at the same checkpoint
    third = run_sfda(*args, f"--ckpt_path={last}")
    assert "Round 2: 4 of 6" in third.stderr and f"--ckpt_path={last}" in third.stderr
    label(2)
    run_sfda(*args, f"--ckpt_path={last}")
    resumed = results_of(people, 3)
    assert round_record(people, 1, 1) == round_record(tmp_path / "stored", 0, 1)
    # same queried set after the restart
    assert round_record(people, 3, 2) == round_record(tmp_path / "stored", 0, 2)
    assert resumed["target/acc"] == stored["target/acc"]
    assert resumed["round_1/target/acc"] == stored["round_1/target/acc"]
    end = torch.load(people / "version_3" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    reference = torch.load(tmp_path / "stored" / "version_0" / "checkpoints" / "last.ckpt",
                           weights_only=True)["state_dict"]
    for key in ("anchors.features", "given_labels", "query_round", "previous.probs"):
        assert torch.equal(end[key], reference[key]), key


@pytest.mark.slow  # a CLI subprocess run
def test_bad_active_configs_fail_naming_the_field(mnist_source, tmp_path):
    done = run_sfda(*small_run(mnist_source, tmp_path), "--trainer.max_epochs=3", check=False)
    assert done.returncode != 0
    assert ("trainer.max_epochs: expected 2 (2 rounds of the budget x model.epochs_per_round 1), got 3"
            in done.stderr)
    done = run_sfda(*small_run(mnist_source, tmp_path), "--model.init_args.budget.total_ratio=1.5",
                    check=False)
    assert done.returncode != 0
    assert "model.budget.total_ratio: 1.5 x 600 target samples = 900 labels" in done.stderr


@pytest.mark.ddp
def test_two_processes_query_the_same_samples_as_one(tmp_path):
    # a dropout-free source (MLP backbone; its BatchNorm synchronised) so 1 and 2 processes train alike
    run_sfda("fit", "--config", str(ROOT / "recipes/digits/mnist_optdigits/source.yaml"),
             f"--trainer.default_root_dir={tmp_path}", "--trainer.max_epochs=1",
             "--model.init_args.backbone=mlp", f"--model.init_args.artifact={tmp_path}/mlp.pt",
             "--data.init_args.train_subset=3000", "--data.init_args.eval_subset=500")
    run_sfda(*small_run(tmp_path / "mlp.pt", tmp_path / "one"), "--trainer.accelerator=cpu")
    two_processes = run_sfda(*small_run(tmp_path / "mlp.pt", tmp_path / "two"), "--trainer.accelerator=cpu",
                             "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.sync_batchnorm=true")
    # values computed over all processes already (accuracy, label-free scores, rounds) draw no
    # sync_dist advice
    assert "It is recommended to use `self.log(" not in two_processes.stderr
    # round 1 comes from the same source model: identical; every rank derived it alike
    # (the run checks and would fail)
    assert round_record(tmp_path / "one", 0, 1) == round_record(tmp_path / "two", 0, 1)
    one, two = results_of(tmp_path / "one"), results_of(tmp_path / "two")
    assert two["round_2/labelled"] == 12
    assert json.loads((tmp_path / "two" / "version_0" / "run_info.json").read_text())["processes"] == 2
    # round 2 follows one epoch of training (CE, IM, anchors, mixup of the global batch) on 1 or 2 processes
    assert round_record(tmp_path / "one", 0, 2) == round_record(tmp_path / "two", 0, 2)
    assert abs(one["target/acc"] - two["target/acc"]) <= 0.01
