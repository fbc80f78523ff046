"""The task-agnostic base: hyper-parameters as plain data, one or several optimisers."""

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from sfda.tasks.module import TaskModule
from sfda.tasks.optim import Optim


class TwoNetworks(TaskModule):
    """A toy method with two networks, each with its own optimiser and learning rate."""

    def __init__(self, first_lr: float = 0.1, second_lr: float = 0.01):
        super().__init__(Optim(name="sgd", lr=first_lr, power=0.0))
        self.automatic_optimization = False
        self.network = torch.nn.Linear(3, 1)
        self.other = torch.nn.Linear(3, 1)
        self.second = Optim(name="adam", lr=second_lr, power=0.0, weight_decay=0.0)

    def optimizer_specs(self):
        return [([{"params": list(self.network.parameters()), "lr": self.optim.lr}], self.optim),
                ([{"params": list(self.other.parameters()), "lr": self.second.lr}], self.second)]

    def training_step(self, batch, batch_idx):
        (x,) = batch
        for optimizer, net in zip(self.optimizers(), (self.network, self.other), strict=True):
            optimizer.zero_grad()
            self.manual_backward(net(x).pow(2).mean())
            optimizer.step()


def test_a_method_can_have_several_optimisers_and_records_its_arguments(tmp_path):
    method = TwoNetworks(first_lr=0.2)
    before = [p.clone() for p in (*method.network.parameters(), *method.other.parameters())]
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(method, DataLoader(TensorDataset(torch.randn(8, 3)), batch_size=4))
    first, second = trainer.optimizers
    assert isinstance(first, torch.optim.SGD) and isinstance(second, torch.optim.Adam)
    assert first.param_groups[0]["lr"] == 0.2 and second.param_groups[0]["lr"] == 0.01
    after = [*method.network.parameters(), *method.other.parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))  # both networks trained
    hparams = dict(method.hparams)  # plain data: what hparams.yaml and a weights_only checkpoint hold
    assert hparams["first_lr"] == 0.2 and hparams["second_lr"] == 0.01 and hparams["optim"]["lr"] == 0.2
