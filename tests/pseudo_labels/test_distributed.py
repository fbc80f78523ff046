"""Unit tests of the pseudo-label engine against brute-force references."""

import pytest
import torch

from sfda.pseudo_labels import (
    gather_rows,
)


def test_gather_rows_is_identity_on_one_process():
    x = torch.arange(6.0).view(3, 2)
    assert torch.equal(gather_rows(x), x)


@pytest.mark.ddp
def test_autograd_collectives_on_two_processes_equal_one_process_on_the_whole_batch(tmp_path):
    """GlobalBatchNorm, gather_with_grad (the global marginal of IM / AaD) and the target pass under 2 gloo
    processes."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    worker = Path(__file__).parents[1] / "kits" / "collectives_worker.py"
    done = subprocess.run([sys.executable, str(worker), "29547", str(tmp_path)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == ["ok", "ok"]
