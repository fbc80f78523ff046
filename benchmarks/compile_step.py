"""Does ``torch.compile`` make the official DTN's training step cheaper on this CPU? (issue 33's DTN case)

    python benchmarks/compile_step.py --official SHOT_CHECKOUT [--rounds 3] [--steps 30]

The official SVHN network (``OfficialDTN`` of ``official_networks.py``: the official ``network.py`` imported
from the checkout, never copied) trains on batches of 64 random 32 px RGB images with SGD (lr 0.01, momentum
0.9), 1 thread: the eager module and ``torch.compile`` of the same module (inductor, default mode),
alternating ``--rounds`` times after 5 warm-up steps each (the compile itself timed once, apart). Rows to
``results/speed.json``: the median milliseconds per step of each, and their ratio. If compiling paid, the
whole-process DTN comparison (``official_shot_process.py --case dtn``) could use it; it does not (see
docs/speed.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from common import append_rows, row
from torch import nn

BENCH = "svhn->mnist, the official DTN (untrained)"
SETTING = "one training step, batch 64, 32 px RGB, 1 thread: eager vs torch.compile"


def milliseconds_per_step(model: nn.Module, steps: int, warm_up: int = 5) -> float:
    """Mean wall milliseconds of ``steps`` SGD steps after ``warm_up`` untimed ones."""
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    for step in range(warm_up + steps):
        if step == warm_up:
            started = time.perf_counter()
        loss = nn.functional.cross_entropy(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return (time.perf_counter() - started) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", required=True, help="a checkout of tim-learn/SHOT")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    os.environ["SHOT_DIGIT_DIR"] = str(Path(args.official) / "digit")
    from official_networks import OfficialDTN

    torch.set_num_threads(1)
    torch.manual_seed(0)
    network = OfficialDTN()
    compiled = torch.compile(network)
    started = time.perf_counter()
    milliseconds_per_step(compiled, steps=1, warm_up=1)
    compile_s = time.perf_counter() - started
    eager, fused = [], []
    for i in range(args.rounds):
        eager.append(milliseconds_per_step(network, args.steps))
        fused.append(milliseconds_per_step(compiled, args.steps))
        print(f"round {i + 1}: eager {eager[-1]:.1f} ms, compiled {fused[-1]:.1f} ms", flush=True)
    note = (f"median of {args.rounds} alternating rounds of {args.steps} steps, each round's values "
            f"eager {[round(v, 1) for v in eager]}, compiled {[round(v, 1) for v in fused]}")
    ratio = statistics.median(fused) / statistics.median(eager)
    append_rows("speed", [
        row(BENCH, SETTING, "eager", "step-ms", statistics.median(eager), 0.0, notes=note),
        row(BENCH, SETTING, "torch.compile", "step-ms", statistics.median(fused), compile_s,
            notes=f"{note}; seconds = the first compiled step (the compilation)"),
        row(BENCH, SETTING, "torch.compile / eager", "step-ratio", ratio, 0.0,
            notes="below 1: compiling pays")])
    print(f"compile {compile_s:.1f} s; compiled / eager {ratio:.3f}")


if __name__ == "__main__":
    main()
