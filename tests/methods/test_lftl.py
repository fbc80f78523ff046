"""Source-free active DA: budget, query strategies, sealed labels, annotators, rounds, resume, DDP."""

import lightning as L
import pytest
import torch

from sfda.active import Budget
from sfda.data import DigitsDataModule
from sfda.methods import LFTL


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
