"""Multi-node DDP on the existing engine: two `sfda fit` processes on loopback as 2 nodes x 1 process
(Lightning's plain environment: MASTER_ADDR, MASTER_PORT, NODE_RANK) end with the weights of one process."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, results_of, run_sfda

SMALL = ["--data.init_args.train_subset=512", "--data.init_args.eval_subset=256"]
TWO_NODES = ["--trainer.strategy=ddp", "--trainer.num_nodes=2", "--trainer.devices=1"]
TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_environment(node_rank: int, port: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "NODE_RANK": str(node_rank)}
    # what each node's process must not inherit: a launcher's or an earlier run's ranks and run version
    for name in ("LOCAL_RANK", "GROUP_RANK", "WORLD_SIZE", "RANK", "SFDA_RUN_VERSION", "SLURM_NTASKS",
                 "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"):
        env.pop(name, None)
    return env


def run_two_nodes(args: list[str], logs) -> list[subprocess.Popen]:
    """Start node 0 and node 1 at once (same command, NODE_RANK 0 and 1) and wait for both."""
    port = free_port()
    command = [sys.executable, "-m", "sfda.cli", *args, "--trainer.enable_progress_bar=false"]
    nodes = [subprocess.Popen(command, cwd=ROOT, env=node_environment(rank, port), stdout=logs[rank],
                              stderr=subprocess.STDOUT) for rank in (0, 1)]
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for node in nodes:
            node.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        for node in nodes:  # a node left waiting for its peer would hang forever
            node.kill()
            node.wait()
        logs[0].write(f"\n[test] killed both nodes after {TIMEOUT_S} s\n")
    return nodes


def checkpoint_state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.ddp
def test_two_nodes_of_one_process_match_one_process(mnist_source, tmp_path):
    common = ["fit", "--config", str(ROOT / "recipes/digits/mnist_optdigits/shot.yaml"),
              f"--model.init_args.source={mnist_source}", "--trainer.max_epochs=1",
              "--trainer.accelerator=cpu", *SMALL]
    run_sfda(*common, f"--trainer.default_root_dir={tmp_path / 'one'}")
    # both nodes get the same root: only global rank 0 writes the run folder; node 1 follows its paths
    paths = [tmp_path / f"node{rank}.log" for rank in (0, 1)]
    logs = [path.open("w") for path in paths]
    try:
        nodes = run_two_nodes([*common, f"--trainer.default_root_dir={tmp_path / 'two'}", *TWO_NODES], logs)
    finally:
        for log in logs:
            log.close()
    tails = "\n".join(f"--- node {rank} (exit {node.returncode}):\n{path.read_text()[-3000:]}"
                      for rank, (node, path) in enumerate(zip(nodes, paths, strict=True)))
    assert all(node.returncode == 0 for node in nodes), tails
    # one run folder, written by node 0, seen by both as 2 processes
    assert [p.name for p in (tmp_path / "two").iterdir()] == ["version_0"], tails
    assert json.loads((tmp_path / "two" / "version_0" / "run_info.json").read_text())["processes"] == 2
    assert results_of(tmp_path / "two")["source_only/acc"] == results_of(tmp_path / "one")["source_only/acc"]
    one = checkpoint_state(tmp_path / "one" / "version_0")
    two = checkpoint_state(tmp_path / "two" / "version_0")
    # pseudo-labels of the first epoch: from the same source model on 1 process or 2 nodes
    assert (one["pseudo_labels"] >= 0).all() and torch.equal(one["pseudo_labels"], two["pseudo_labels"])
    weights = [k for k, v in one.items() if v.is_floating_point() and k.startswith("network.")
               and "running" not in k]
    assert weights and all(torch.allclose(one[k], two[k], atol=1e-4) for k in weights), \
        max((one[k] - two[k]).abs().max().item() for k in weights)
