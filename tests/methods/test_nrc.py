"""NRC's expanded neighbours and reciprocity weights against the official operations on a small bank."""

import pytest
import torch
import torch.nn.functional as F
from kits.bad_input import source_artifact

from sfda.methods import NRC

CLASSES = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return source_artifact(tmp_path_factory.mktemp("nrc") / "digits.pt", CLASSES)


def test_expanded_neighbours_and_weights_are_the_official_ones(artifact):
    """The official step: neighbours of each neighbour by ``bmm`` over the bank, ``topk(KK + 1)`` dropping
    the first column (the row itself), weight = how often the sample is among them, else 0.1."""
    n, k, kk = 60, 4, 3
    gen = torch.Generator().manual_seed(0)
    method = NRC(str(artifact), k=k, kk=kk, knn_backend="torch")
    method.build_state(n)
    features = F.normalize(torch.randn(n, method.task.feature_dim, generator=gen), dim=1)
    scores = torch.randn(n, 10, generator=gen).softmax(1)
    method.bank.write(torch.arange(n), synchronise=False, features=features, scores=scores)
    index = torch.tensor([0, 7, 33])
    near = method.bank_neighbours(features[index], k, index)
    weights, expanded = method.expanded_neighbours(near, index)

    distance = torch.bmm(features[near], features.T.unsqueeze(0).expand(len(index), -1, -1))
    near_near = distance.topk(kk + 1, dim=-1).indices[:, :, 1:]
    match = (near_near == index.view(-1, 1, 1)).sum(-1).float()
    assert torch.equal(weights, torch.where(match > 0, match, torch.full_like(match, 0.1)))
    assert torch.equal(expanded, scores[near_near].view(len(index), k * kk, 10))
    assert (weights >= 1).any() and (weights == 0.1).any()  # both kinds occur, so the check can fail
