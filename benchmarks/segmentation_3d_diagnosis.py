"""Why 3-D BatchNorm re-estimation failed on one direction: measurements on a 3-D benchmark's source model.

    python benchmarks/segmentation_3d_diagnosis.py colin27_itk_3d [--patches 32]

For the benchmark's source artifact (``runs/segmentation/<benchmark>/source.pt``), on the source volume and
on the target volume (the artifact's own preprocessing), it measures:

- what the patches contain: the brain fraction (from the labels, REPORTING ONLY), the air fraction
  (scaled intensity below 0.05) and the head fraction, for the 32 fixed training patches and for the
  windows of the sliding-window inference;
- the Dice of the source model with BatchNorm statistics taken from: the source training (source-only);
  32 patches drawn over the whole volume (AdaBN as the recipes ran before ``patch_region``); the sliding
  windows the evaluation uses; patches whose centre lies in the head (a label-free intensity mask); 32
  patches drawn within the head's bounding box (``patch_region: foreground``, the recipes' choice now);
- the same re-estimations on the SOURCE volume (a control: re-estimating on the source domain itself
  should change nothing);
- how far each set of statistics lies from the source's (mean over the BatchNorm channels of
  ``|mu - mu_source| / sigma_source``).

Labels are used only for the reported Dice and the brain fractions. Rows go to
``benchmarks/results/segmentation_3d_diagnosis.json`` (benchmark ``<direction>, <source|target> volume``,
setting ``--setting``, method = where the BatchNorm statistics come from; metrics ``dice``, ``patch-air``,
``patch-brain``, ``stat-distance``); the volumes' sizes and intensities print on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace

import numpy as np
import torch
from common import ROOT, append_rows, row

AIR = 0.05  # scaled intensity below which a voxel counts as air (the scaling maps the 1st percentile to 0)


def dice(probs: torch.Tensor, label: torch.Tensor) -> float:
    """Brain Dice of ``probs (1, C, X, Y, Z)`` against ``label (X, Y, Z)``."""
    predicted = probs[0].argmax(0) > 0
    truth = label > 0
    return float(2 * (predicted & truth).sum() / max(int(predicted.sum() + truth.sum()), 1))


def windows(shape: tuple[int, ...], roi: tuple[int, ...], overlap: float = 0.25) -> list[tuple[int, ...]]:
    """Corners of MONAI's sliding-window grid (the evaluation's windows) over a volume of ``shape``."""
    from monai.inferers.utils import _get_scan_interval, dense_patch_slices

    size = tuple(max(s, r) for s, r in zip(shape, roi, strict=True))
    interval = _get_scan_interval(size, roi, len(roi), (overlap,) * len(roi))
    return [tuple(s.start for s in sl[-len(roi):]) for sl in dense_patch_slices(size, roi, interval)]


def crop(volume: torch.Tensor, corner: tuple[int, ...], roi: tuple[int, ...]) -> torch.Tensor:
    """``(..., X, Y, Z)`` window of ``roi`` at ``corner``, zero-padded where the volume is smaller."""
    from monai.transforms import SpatialPad

    padded = SpatialPad(roi)(volume) if any(s < r for s, r in zip(volume.shape[-3:], roi, strict=True)) \
        else volume
    window = tuple(slice(c, c + r) for c, r in zip(corner, roi, strict=True))
    return torch.as_tensor(padded[(..., *window)])


def statistics(network: torch.nn.Module, patches: list[torch.Tensor], batch: int = 4) -> dict:
    """BatchNorm running statistics re-estimated (cumulative average, as AdaBN) over ``patches``."""
    from sfda.models.norm import batch_norm_layers, reset_running_statistics

    layers = batch_norm_layers(network)
    reset_running_statistics(layers)
    network.train()
    with torch.no_grad():
        for i in range(0, len(patches), batch):
            network(torch.stack(patches[i:i + batch]))
    network.eval()
    return {k: v.clone() for k, v in network.state_dict().items() if "running" in k}


def distance(stats: dict, reference: dict) -> float:
    """Mean over BatchNorm channels of ``|mu - mu_ref| / sigma_ref``."""
    values = [((stats[k] - reference[k]).abs() / reference[k.replace("mean", "var")].sqrt().clamp_min(1e-5))
              for k in reference if k.endswith("running_mean")]
    return float(torch.cat(values).mean())


def content(volume, corners, roi) -> dict:
    """Mean brain / air / head fractions of the windows at ``corners``."""
    brain = [float((crop(volume.label[None], c, roi) > 0).float().mean()) for c in corners]
    air = [float((crop(volume.image, c, roi)[0] < AIR).float().mean()) for c in corners]
    return {"brain": float(np.mean(brain)), "air": float(np.mean(air)), "head": 1 - float(np.mean(air)),
            "brain_per_window": [round(b, 3) for b in brain]}


def head_corners(volume, roi, count: int, seed: int = 0) -> list[tuple[int, ...]]:
    """``count`` patch corners whose centre lies in the head (scaled intensity >= AIR), label-free."""
    image = volume.image[0].numpy()
    rng = np.random.default_rng(seed)
    shape = image.shape
    corners = []
    while len(corners) < count:
        corner = tuple(int(rng.integers(0, max(s - r, 0) + 1)) for s, r in zip(shape, roi, strict=True))
        centre = tuple(min(c + r // 2, s - 1) for c, r, s in zip(corner, roi, shape, strict=True))
        if image[centre] >= AIR:
            corners.append(corner)
    return corners


def diagnose(benchmark: str, patches: int) -> dict:
    from monai.inferers import SlidingWindowInferer
    from segmentation import BENCHMARKS

    from sfda.data import SegmentationDataModule
    from sfda.data.segmentation import PatchDataset

    _, source_name, target_name, _ = BENCHMARKS[benchmark]
    from sfda.models import load_artifact

    artifact = load_artifact(ROOT / "runs" / "segmentation" / benchmark / "source.pt")
    network = artifact.build_network().eval()
    source_state = {k: v.clone() for k, v in network.state_dict().items()}
    source_stats = {k: v for k, v in source_state.items() if "running" in k}
    roi = tuple(artifact.input.roi)
    inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=2, overlap=0.25, mode="gaussian")
    out = {"benchmark": benchmark, "roi": roi, "patches": patches}
    for side, name in (("source", source_name), ("target", target_name)):
        dm = SegmentationDataModule(f"demo://skull_stripping/{name}.json", artifact.class_names,
                                    role="source", input=artifact.input, patches_per_volume=patches)
        volume = dm.load_volumes()["train"][0]
        whole, box = (PatchDataset([volume], replace(artifact.input, patch_region=region), patches).corners
                      for region in ("volume", "foreground"))
        grid = windows(tuple(volume.image.shape[1:]), roi)
        head = head_corners(volume, roi, patches)
        inside = np.nonzero(volume.image[0].numpy() >= AIR)
        row = {"volume": name, "shape": list(volume.image.shape[1:]),
               "head_box": [int(i.max()) + 1 - int(i.min()) for i in inside],
               "brain_fraction_of_volume": float((volume.label > 0).float().mean()),
               "air_fraction_of_volume": float((volume.image[0] < AIR).float().mean()),
               "scaled_intensity": {part: {"mean": float(volume.image[0][mask].mean()),
                                           "std": float(volume.image[0][mask].std())}
                                    for part, mask in (("brain", volume.label > 0),
                                                       ("head outside the brain",
                                                        (volume.label == 0) & (volume.image[0] >= AIR)))},
               "content": {"patches over the whole volume": content(volume, whole, roi),
                           "sliding windows": content(volume, grid, roi),
                           "head-centred patches": content(volume, head, roi),
                           "patches in the head box": content(volume, box, roi)},
               "dice": {}, "stat_distance": {}}
        image = torch.as_tensor(volume.image)[None]
        for label, corners in (("source statistics", None), ("patches over the whole volume", whole),
                               ("sliding windows", grid), ("head-centred patches", head),
                               ("patches in the head box", box)):
            network.load_state_dict(source_state)
            if corners is not None:
                stats = statistics(network, [crop(volume.image, c, roi) for c in corners])
                row["stat_distance"][label] = distance(stats, source_stats)
            with torch.no_grad():
                probs = inferer(image, network.eval()).softmax(1)
            row["dice"][label] = dice(probs, volume.label)
        out[side] = row
        print(f"\n{benchmark} {side} volume {name} {row['shape']}: brain "
              f"{row['brain_fraction_of_volume']:.3f}, air {row['air_fraction_of_volume']:.3f} of the volume,"
              f" head box {row['head_box']}; scaled intensity {row['scaled_intensity']}")
        for label, value in row["dice"].items():
            c = row["content"].get(label)
            gap = row["stat_distance"].get(label)
            print(f"  {label:30s} Dice {value:.4f}"
                  + (f"  stat distance {gap:.3f}" if gap is not None else "")
                  + (f"  brain {c['brain']:.3f} air {c['air']:.3f}" if c else ""))
    return out


def rows_of(found: dict, setting: str, seconds: float) -> list[dict]:
    """Result rows of one ``diagnose`` answer."""
    from segmentation import BENCHMARKS

    out = []
    for side in ("source", "target"):
        part = found[side]
        bench = f"{BENCHMARKS[found['benchmark']][0]}, {side} volume ({part['volume']})"
        for method, value in part["dice"].items():
            name = f"BN statistics: {method}"
            out.append(row(bench, setting, name, "dice", value, seconds,
                           notes="brain Dice of the source model, whole-volume sliding-window inference"))
            if method in part["content"]:
                c = part["content"][method]
                out += [row(bench, setting, name, "patch-air", c["air"], seconds,
                            notes=f"mean fraction of air (scaled intensity < {AIR}) in the windows"),
                        row(bench, setting, name, "patch-brain", c["brain"], seconds,
                            notes="mean brain fraction of the windows (labels: reporting only)"),
                        row(bench, setting, name, "stat-distance", part["stat_distance"][method], seconds,
                            notes="mean over BatchNorm channels of |mu - mu_source| / sigma_source")]
    return out


def main() -> None:
    import time

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("benchmarks", nargs="+")
    parser.add_argument("--patches", type=int, default=32)
    parser.add_argument("--setting", required=True, help="how the source model was trained (rows' setting)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))
    for benchmark in args.benchmarks:
        start = time.perf_counter()
        found = diagnose(benchmark, args.patches)
        print(json.dumps({side: {k: found[side][k] for k in ("shape", "head_box", "brain_fraction_of_volume",
                                                            "air_fraction_of_volume", "scaled_intensity")}
                          for side in ("source", "target")}))
        append_rows("segmentation_3d_diagnosis", rows_of(found, args.setting, time.perf_counter() - start))


if __name__ == "__main__":
    main()
