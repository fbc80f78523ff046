"""Time one SHOT target epoch the way the official digit script (SHOT's ``uda_digit.py``) runs it.

    python benchmarks/official_shot_epoch.py --samples 60000

Same model (the ccexam SVHN network: 256-d penultimate activation as the feature, last Linear
frozen), same math as ``recipes/digits/svhn_mnist/shot.yaml``, but the official script's
machinery: torchvision PIL transforms (Resize 32, RGB, ToTensor, Normalize) in a DataLoader with
its default 4 workers, NCHW tensors, ``obtain_label`` as an eval pass with batch 64 and numpy /
scipy cosine distances, SGD with the lr schedule applied per step, no Lightning. Written here from
the published algorithm for timing only; accuracy is not its purpose. Prints one line of seconds
(label pass, training steps, total) and appends a row to ``results/speed.json``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from common import ROOT, append_rows, row
from PIL import Image
from scipy.spatial.distance import cdist
from torch.utils.data import DataLoader, Dataset


class MnistAsSvhn(Dataset):
    """MNIST uint8 images through the official script's torchvision transform; returns (image, index)."""

    def __init__(self, images: np.ndarray, mean, std):
        from torchvision import transforms

        self.images = images
        self.transform = transforms.Compose([transforms.Resize(32),
                                             transforms.Lambda(lambda x: x.convert("RGB")),
                                             transforms.ToTensor(), transforms.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i], mode="L")), i


def centroid_labels_numpy(features: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """SHOT's two-assignment centroid labelling with scipy cosine distances, as the official script."""
    features = np.concatenate([features, np.ones((len(features), 1))], axis=1)
    features = features / np.linalg.norm(features, axis=1, keepdims=True)
    weights = probs
    for _ in range(2):
        centres = weights.T @ features / (1e-8 + weights.sum(0)[:, None])
        labels = cdist(features, centres, "cosine").argmin(1)
        weights = np.eye(probs.shape[1])[labels]
    return labels


def official_epoch(samples: int, workers: int) -> dict:
    from omegaconf import OmegaConf

    from sfda.data.digits import load_digits_split
    from sfda.models import ExternalModel, wrap_external

    recipe = OmegaConf.to_container(OmegaConf.load(ROOT / "recipes/digits/svhn_mnist/shot.yaml"),
                                    resolve=True)
    args, source = recipe["model"]["init_args"], recipe["model"]["init_args"]["source"]
    model = wrap_external(ExternalModel(**source)).build()
    images, _ = load_digits_split("mnist", "train")
    dataset = MnistAsSvhn(images[:samples], tuple(source["input"]["mean"]), tuple(source["input"]["std"]))
    train = DataLoader(dataset, batch_size=64, shuffle=True, num_workers=workers, drop_last=False)
    label_pass = DataLoader(dataset, batch_size=64, shuffle=False, num_workers=workers, drop_last=False)
    model.head.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args["optim"]["lr"], momentum=0.9, nesterov=True,
                                weight_decay=1e-3)
    total = len(train) * recipe["trainer"]["max_epochs"]

    started = time.perf_counter()
    model.eval()
    feats, probs = [], []
    with torch.no_grad():
        for x, _ in label_pass:
            f, logits = model(x)
            feats.append(f)
            probs.append(logits.softmax(1))
    pseudo = torch.from_numpy(centroid_labels_numpy(torch.cat(feats).numpy(), torch.cat(probs).numpy()))
    labelled = time.perf_counter()
    model.train()
    for step, (x, index) in enumerate(train):
        if x.shape[0] == 1:
            continue
        for group in optimizer.param_groups:
            group["lr"] = args["optim"]["lr"] * (1 + 10 * (step + 1) / total) ** -0.75
        _, logits = model(x)
        p = logits.softmax(1)
        marginal = p.mean(0)
        loss = args["beta"] * F.cross_entropy(logits, pseudo[index]) \
            + (-(p * torch.log(p + 1e-5)).sum(1)).mean() \
            + (marginal * torch.log(marginal + 1e-5)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    ended = time.perf_counter()
    return {"label_s": labelled - started, "train_s": ended - labelled, "total_s": ended - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=60000)
    parser.add_argument("--workers", type=int, default=4,
                        help="DataLoader workers (the official default is 4)")
    parser.add_argument("--no-record", action="store_true", help="print only (a smoke run)")
    args = parser.parse_args()
    out = official_epoch(args.samples, args.workers)
    print(f"official-style SHOT epoch on {args.samples}: label pass {out['label_s']:.1f}s, "
          f"training {out['train_s']:.1f}s, total {out['total_s']:.1f}s", flush=True)
    if args.no_record:
        return
    setting = f"closed, {args.samples} target images/epoch"
    note = ("benchmarks/official_shot_epoch.py: the official uda_digit.py machinery (torchvision PIL "
            f"transforms, {args.workers} loader workers, NCHW, batch-64 label pass, scipy cdist), no "
            f"validation; label pass {out['label_s']:.1f}s + training {out['train_s']:.1f}s")
    path = append_rows("speed", [row("svhn->mnist", setting, "shot (official-script procedure)",
                                     "epoch-seconds", out["total_s"], out["total_s"], epochs=1, notes=note)])
    print(f"-> {path.name}")


if __name__ == "__main__":
    main()
