"""Source-free active DA: budget, query strategies, sealed labels, annotators, rounds, resume, DDP."""

import pytest

from sfda.active import Budget


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
