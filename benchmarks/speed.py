"""Speed suite on SVHN->MNIST with the ccexam model (real data, this machine's CPU).

    python benchmarks/speed.py --train-subset 10000

1. Per method: seconds per adaptation epoch, training images/s and the engine's share of
   the epoch, from one `sfda fit` epoch (validation and source-only evaluation off, so the
   epoch is the method's own work: engine passes + training steps).
2. Framework overhead: one SHOT epoch in `sfda fit` vs a minimal plain-PyTorch loop doing the
   same math (full eval pass, SHOT centroid labels, then IM + beta*CE steps with the same
   optimiser, schedule, batches, model and channels-last layout) in the same kind of process
   (a fresh Python process, the same torch thread count). Ratio = sfda epoch / plain epoch
   (goal <= 1.10). The plain loop is also timed in the default NCHW layout the official code uses.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from common import ROOT, append_rows, row, run_cli

METHODS = {"tent": "tent", "shot": "shot", "shot_im": "shot-im", "nrc": "nrc", "aad": "aad"}
BENCH = "svhn->mnist"
ONE_EPOCH = ["--trainer.max_epochs=1", "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0",
             "--model.init_args.evaluate_source=false"]


def sfda_epoch(method: str, train_subset: int) -> dict:
    results, seconds = run_cli("fit", f"recipes/digits/svhn_mnist/{method}.yaml",
                               ROOT / "benchmarks" / "runs" / "speed" / method, *ONE_EPOCH,
                               f"--data.init_args.train_subset={train_subset}")
    return {**results, "process_seconds": seconds}


def plain_epoch(train_subset: int, channels_last: bool = True) -> float:
    """Run ``plain_loop()`` in a fresh process (same set-up as the CLI run); returns its epoch seconds."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import speed; "
            f"print(speed.plain_loop({train_subset}, {channels_last}))")
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PL_GLOBAL_SEED": "0"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return float(done.stdout.strip().splitlines()[-1])


def plain_loop(train_subset: int, channels_last: bool = True) -> float:
    """One SHOT epoch (beta from the recipe) written as a bare PyTorch loop; returns its wall seconds.
    ``channels_last`` as `sfda fit` does by default; False is the memory layout of the official code."""
    import torch
    import torch.nn.functional as F
    from omegaconf import OmegaConf

    from sfda.data import DigitsDataModule
    from sfda.losses import information_maximization
    from sfda.models import ExternalModel, wrap_external
    from sfda.pseudo_labels import centroid_labels

    recipe = OmegaConf.to_container(OmegaConf.load(ROOT / "recipes/digits/svhn_mnist/shot.yaml"),
                                    resolve=True)
    args = recipe["model"]["init_args"]
    artifact = wrap_external(ExternalModel(**args["source"]))
    model = artifact.build()
    data = DigitsDataModule(**{**recipe["data"]["init_args"], "train_subset": train_subset})
    data.input_spec = artifact.input
    train, bank = data.train_dataloader(), data.bank_dataloader()
    model.head.requires_grad_(False)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    groups = model.parameter_groups()
    opt_cfg, beta = args["optim"], args["beta"]
    params = [p for p in groups["backbone"] + groups["bottleneck"] if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=opt_cfg["lr"], momentum=0.9, nesterov=True,
                                weight_decay=opt_cfg["weight_decay"])
    total = len(train) * recipe["trainer"]["max_epochs"]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: (1 + 10 * t / total) ** -0.75)

    started = time.perf_counter()
    model.eval()
    with torch.no_grad():
        outputs = [(batch["index"], *model(batch["image"].contiguous(memory_format=layout)))
                   for batch in bank]
    index = torch.cat([o[0] for o in outputs])
    features = torch.cat([o[1] for o in outputs])
    probs = torch.cat([o[2] for o in outputs]).softmax(1)
    pseudo = torch.empty(len(index), dtype=torch.long)
    pseudo[index] = centroid_labels(features, probs)
    model.train()
    for batch in train:
        _, logits = model(batch["image"].contiguous(memory_format=layout))
        p = logits.softmax(1)
        loss = information_maximization(p) + beta * F.cross_entropy(logits, pseudo[batch["index"]])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-subset", type=int, default=10000, help="target training images per epoch")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--repeats", type=int, default=2,
                        help="alternating sfda/plain SHOT epochs for the overhead ratio (0: skip it)")
    args = parser.parse_args()
    n = args.train_subset
    setting = f"closed, {n} target images/epoch"
    rows = []
    for method in args.methods:
        r = sfda_epoch(method, n)
        note = (f"one `sfda fit` epoch on {n} MNIST images, no validation; torch threads "
                f"{os.environ.get('OMP_NUM_THREADS', 'default')}")
        rows += [row(BENCH, setting, METHODS[method], "epoch-seconds", r["timing/epoch_s"],
                     r["process_seconds"], run=r, epochs=1, notes=note),
                 row(BENCH, setting, METHODS[method], "images-per-s", r["timing/train_images_per_s"],
                     r["process_seconds"], run=r, epochs=1, notes=note)]
        if "timing/engine_share" in r:
            rows.append(row(BENCH, setting, METHODS[method], "engine-share", r["timing/engine_share"],
                            r["process_seconds"], run=r, epochs=1,
                            notes="engine seconds (pseudo-label passes, clustering, bank writes, kNN) / "
                                  "epoch seconds"))
        print(method, json.dumps({k: round(v, 3) for k, v in r.items() if k.startswith("timing/")}),
              flush=True)
    if args.repeats == 0:  # per-method rows only
        print(f"-> {append_rows('speed', rows).name}")
        return
    sfda_s, plain_s = [], []
    for _ in range(args.repeats):
        sfda_s.append(sfda_epoch("shot", n)["timing/epoch_s"])
        plain_s.append(plain_epoch(n))
        print(f"shot epoch: sfda {sfda_s[-1]:.2f}s, plain loop {plain_s[-1]:.2f}s", flush=True)
    contiguous_s = plain_epoch(n, channels_last=False)
    print(f"plain loop, contiguous layout (as the official code): {contiguous_s:.2f}s", flush=True)
    best_sfda, best_plain = min(sfda_s), min(plain_s)
    rows += [row(BENCH, setting, "shot", "overhead", best_sfda / best_plain, sum(sfda_s) + sum(plain_s),
                 epochs=1,
                 notes=f"best of {args.repeats}: sfda {best_sfda:.2f}s / plain PyTorch loop "
                       f"{best_plain:.2f}s per SHOT epoch"),
             row(BENCH, setting, "shot (plain PyTorch loop)", "epoch-seconds", best_plain, sum(plain_s),
                 epochs=1,
                 notes="reference loop in benchmarks/speed.py, same math, data pipeline and channels-last "
                       "layout, no Lightning"),
             row(BENCH, setting, "shot (plain PyTorch loop, contiguous)", "epoch-seconds", contiguous_s,
                 contiguous_s, epochs=1,
                 notes="the same loop in the default NCHW layout, as the official SHOT code runs")]
    path = append_rows("speed", rows)
    print(f"overhead ratio {best_sfda / best_plain:.3f} -> {path.name}")


if __name__ == "__main__":
    main()
