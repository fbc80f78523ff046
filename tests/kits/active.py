"""The active-learning tests' run: the LFTL recipe on a small real optdigits pool, and a round's
labels read back."""

from __future__ import annotations

import csv

from conftest import ROOT

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
