"""BNM: the loss falls as the batch's predictions become confident and diverse; a bad weight is refused."""

import pytest
import torch
from kits.bad_input import source_artifact

from sfda.methods import BNM

CLASSES = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return source_artifact(tmp_path_factory.mktemp("bnm") / "digits.pt", CLASSES)


def loss_of(method: BNM, logits: torch.Tensor) -> torch.Tensor:
    """BNM's training loss when the network's output on the batch is ``logits``."""
    method.forward = lambda images, index=None: (None, logits)
    batch = {"image": torch.zeros(len(logits), 1, 28, 28), "index": torch.arange(len(logits))}
    with pytest.warns(UserWarning, match="self.log"):  # no Trainer here: the logged value is dropped
        return method.training_step(batch, 0)


def test_loss_falls_from_uniform_to_one_class_to_one_hot_over_all_classes(artifact):
    method = BNM(str(artifact), evaluate_source=False)
    n = len(CLASSES)
    uniform = torch.zeros(n, n)  # every row 1/C: rank 1, nuclear norm sqrt(B/C)
    one_class = torch.full((n, n), -30.0)
    one_class[:, 0] = 30.0  # confident but not diverse: rank 1, nuclear norm sqrt(B)
    one_hot = torch.full((n, n), -30.0).fill_diagonal_(30.0)  # confident and diverse: nuclear norm B
    losses = [float(loss_of(method, logits)) for logits in (uniform, one_class, one_hot)]
    assert losses[0] > losses[1] > losses[2], losses
    expected = [-(1 / n) ** 0.5 * n ** 0.5 / n, -(n ** 0.5) / n, -1.0]  # -||P||_* / B
    assert losses == pytest.approx(expected, abs=1e-4)


def test_weight_scales_the_loss_and_its_gradient_reaches_the_predictions(artifact):
    logits = torch.randn(8, len(CLASSES), requires_grad=True)
    one = loss_of(BNM(str(artifact), evaluate_source=False), logits)
    two = loss_of(BNM(str(artifact), weight=2.0, evaluate_source=False), logits)
    assert float(two.detach()) == pytest.approx(2 * float(one.detach()))
    two.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_the_head_is_frozen(artifact):
    method = BNM(str(artifact), evaluate_source=False)
    head = method.artifact.head_layer
    frozen = [p.requires_grad for name, p in method.network.named_parameters()
              if name.startswith(f"network.{head}.")]  # the classifier wraps its network
    assert frozen and not any(frozen)
    assert any(p.requires_grad for p in method.network.parameters())


@pytest.mark.parametrize("weight", [0.0, -1.0])
def test_a_non_positive_weight_is_refused_naming_the_field(artifact, weight):
    with pytest.raises(ValueError, match=r"model\.weight: expected a positive weight"):
        BNM(str(artifact), weight=weight)
