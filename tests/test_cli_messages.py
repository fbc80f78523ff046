"""Bad-input catalogue, round 3: messages a user can act on (a checkpoint of another network, an
accelerator the machine lacks, ``${VAR}`` in a recipe, a ``--ckpt_path`` that is a folder or a dangling
link, a ``--config`` that is not a recipe) and recipes that include recipes. Every case asserts the exit
status, that the message names the file or field and the expected value, and that no file of the user's
changed. All run in-process on tiny real files."""

from __future__ import annotations

import pytest
from kits.bad_input import (
    assert_refused,
    shot_recipe,
)
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator, XLAAccelerator


# --- 6b. an accelerator or devices the machine does not have: the field, what was found, the fix ----
@pytest.fixture()
def no_gpu(monkeypatch):
    """A machine without CUDA, MPS or TPU (whatever the test machine has)."""
    for accelerator in (CUDAAccelerator, MPSAccelerator, XLAAccelerator):
        monkeypatch.setattr(accelerator, "is_available", staticmethod(lambda: False))
    monkeypatch.setattr(CUDAAccelerator, "auto_device_count", staticmethod(lambda: 0))


# --- 6f. more trainer fields the machine or sfda cannot do, named with the expected value ----
@pytest.mark.parametrize("override, needle", [
    ("--trainer.devices=0", "trainer.devices: 0; expected a count >= 1, -1 (all), GPU ids such as [0, 1], "
                            "or auto"),
    ("--trainer.devices=-2", "trainer.devices: -2; expected a count >= 1"),
    ("--trainer.strategy=dpp", "trainer.strategy: 'dpp' is not a strategy; did you mean 'ddp'?"),
    ("--trainer.num_nodes=0", "trainer.num_nodes: expected a count of machines >= 1, got 0"),
    ("--trainer.precision=64", "trainer.precision: 64 (float64) is not supported"),
])
def test_trainer_values_lightning_rejects_with_a_traceback_are_named(workspace, no_gpu, override, needle):
    text = assert_refused(["fit", "--config", shot_recipe(workspace), override], workspace, needle)
    assert "Traceback" not in text
