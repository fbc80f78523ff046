"""Per-step neighbour work of NRC and AaD: sfda's engine against the official code's own tensor operations.

    python benchmarks/neighbour_step.py [--bank 60000] [--steps 40]

Both find, at every training step, each batch sample's K nearest neighbours in a bank of all N target
features, and NRC also the KK nearest neighbours of each of those. This times that work alone (the network's
forward and backward are the same on both sides) on one bank of N random unit rows (256-d features,
10 classes), batch 64, K = KK = 5, 1 thread:

- official: the operations of the official ``train_tar.py`` of Albert0147/NRC_SFDA and AaD_SFDA's
  ``tar_adaptation.py``, in their order (write the batch's rows, ``feats @ fea_bank.T``, ``topk(K+1)``
  dropping the first column; NRC then ``bmm`` of the neighbours' features with the bank ``expand``-ed over
  the batch, ``topk(KK+1)``, reciprocity weights, score gathers), written here from the published code
  for timing only, on CPU tensors as that code keeps its feature bank;
- sfda: the methods' own code paths on a real ``NRC`` / ``AaD`` module (``TargetBank.write``,
  ``bank_neighbours``, ``NRC.expanded_neighbours``) built from the optdigits LeNet artifact.

Rows (milliseconds per step, median over ``--steps`` after 3 warm-up steps) go to ``results/speed.json``,
setting ``neighbour step, bank N``; the same seeded batches feed both sides, and the rows say whether the
two found the same neighbours.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
import torch.nn.functional as F
from common import ROOT, append_rows, row
from reference_loop import ensure_source

BATCH, DIM, CLASSES, K, KK = 64, 256, 10, 5, 5


def official_aad_step(fea_bank, score_bank, feats, probs, tar_idx):
    """The official AaD step's neighbour work (also the first half of NRC's); neighbours (B, K)."""
    output_f_ = feats.detach().clone()
    fea_bank[tar_idx] = output_f_.detach().clone()
    score_bank[tar_idx] = probs.detach().clone()
    distance = output_f_ @ fea_bank.T
    _, idx_near = torch.topk(distance, dim=-1, largest=True, k=K + 1)
    idx_near = idx_near[:, 1:]
    score_near = score_bank[idx_near]
    del score_near
    return idx_near, None


def official_nrc_step(fea_bank, score_bank, feats, probs, tar_idx):
    """The official NRC step's neighbour work; (neighbours (B, K), their neighbours (B, K, KK))."""
    idx_near, _ = official_aad_step(fea_bank, score_bank, feats, probs, tar_idx)
    fea_near = fea_bank[idx_near]
    fea_bank_re = fea_bank.unsqueeze(0).expand(fea_near.shape[0], -1, -1)
    distance_ = torch.bmm(fea_near, fea_bank_re.permute(0, 2, 1))
    _, idx_near_near = torch.topk(distance_, dim=-1, largest=True, k=KK + 1)
    idx_near_near = idx_near_near[:, :, 1:]
    match = (idx_near_near == tar_idx.unsqueeze(-1).unsqueeze(-1)).sum(-1).float()
    weight = torch.where(match > 0.0, match, torch.ones_like(match).fill_(0.1))
    score_near_kk = score_bank[idx_near_near].contiguous().view(feats.shape[0], -1, CLASSES)
    del weight, score_near_kk
    return idx_near, idx_near_near


def sfda_step(module, feats, probs, index, expanded: bool):
    """sfda's engine work of one NRC (``expanded``) or AaD step; (neighbours, their neighbours or None)."""
    module.bank.write(index, features=feats, scores=probs)
    near = module.bank_neighbours(feats, module.k, index)
    _ = module.bank.scores[near]
    if not expanded:
        return near, None
    weights, scores = module.expanded_neighbours(near, index)
    return near, weights


def batches(n: int, steps: int, seed: int = 0):
    """Seeded (features (B, D) unit rows, probabilities (B, C), distinct bank rows (B,)) per step."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        yield (F.normalize(torch.randn(BATCH, DIM, generator=gen), dim=1),
               torch.randn(BATCH, CLASSES, generator=gen).softmax(1),
               torch.randperm(n, generator=gen)[:BATCH])


def bank(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(n, DIM, generator=gen), dim=1),
            torch.randn(n, CLASSES, generator=gen).softmax(1))


def build(method: str, n: int):
    """A real sfda module of ``method`` whose bank holds the seeded bank rows."""
    from sfda.methods import NRC, AaD

    module = {"nrc": NRC, "aad": AaD}[method](str(ROOT / "runs" / "optdigits_mnist" / "source.pt"), k=K,
                                               **({"kk": KK} if method == "nrc" else {}), knn_backend="torch")
    module.build_state(n)
    features, scores = bank(n)
    module.bank.write(torch.arange(n), synchronise=False, features=features, scores=scores)
    return module


def timed(step, steps: int, n: int) -> tuple[list[float], list]:
    """Milliseconds of each step after 3 warm-up steps, and each step's neighbours."""
    times, found = [], []
    for i, (feats, probs, index) in enumerate(batches(n, steps + 3)):
        started = time.perf_counter()
        out = step(feats, probs, index)
        if i >= 3:
            times.append(1000 * (time.perf_counter() - started))
            found.append(out[0])
    return times, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bank", type=int, default=60000, help="N, the bank's rows")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ensure_source("lenet")
    n, rows = args.bank, []
    setting = f"neighbour step, bank {n}, batch {BATCH}, K {K}, KK {KK}, 1 thread"
    for method, official in (("nrc", official_nrc_step), ("aad", official_aad_step)):
        theirs, their_near = timed(functools.partial(official, *bank(n)), args.steps, n)
        ours, our_near = timed(functools.partial(sfda_step, build(method, n), expanded=method == "nrc"),
                               args.steps, n)
        pairs = zip(their_near, our_near, strict=True)
        same = sum(torch.equal(a.sort(1).values, b.sort(1).values) for a, b in pairs)
        name = method.upper() if method == "nrc" else "AaD"
        for side, times in (("official code's operations", theirs), ("sfda engine", ours)):
            quartiles = [round(q, 1) for q in statistics.quantiles(times, n=4)]
            rows.append(row(f"{name} neighbour work", setting, side, "ms-per-step", statistics.median(times),
                            sum(times) / 1000, quartiles=quartiles,
                            same_neighbours=f"{same}/{len(times)} steps",
                            notes="median over steps; the network's forward and backward excluded (the same "
                                  "on both sides)"))
        ratio = statistics.median(ours) / statistics.median(theirs)
        rows.append(row(f"{name} neighbour work", setting, "sfda / official", "step-ratio", ratio, 0.0,
                        notes="below 1 is sfda ahead"))
        print(f"{name}: official {statistics.median(theirs):.1f} ms, sfda {statistics.median(ours):.1f} ms "
              f"per step (x{ratio:.2f}); same neighbours in {same}/{len(ours)} steps", flush=True)
    append_rows("speed", rows)


if __name__ == "__main__":
    main()
