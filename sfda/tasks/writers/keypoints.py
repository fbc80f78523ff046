"""``sfda predict`` of a pose model: COCO keypoint results in original image pixels and overlays.

``keypoints.json`` is a COCO results list, one entry per person: ``image_id`` and ``category_id`` (the
file's),
``keypoints`` ``[x1, y1, s1, ...]`` (s = the joint's heatmap peak), ``score`` (their mean) and sfda's
``file_name`` and ``person_id``. ``overlays/<index>_<name>.png`` draws the skeleton on the person crop:
source-only and this model side by side for adaptation methods (and the reference, when given).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from ...data.pose_views import invert, warp_points
from ...data.transforms import to_pixels
from ...run.folder import own_run_dir

VISIBLE_SCORE = 0.2  # joints drawn in colour on overlays: peak at least this; the others faded
FADED = (150, 150, 150)


def overlay_png(
    pixels: np.ndarray, panels: dict[str, dict], edges: list[tuple[int, int]], path: Path
) -> Path:
    """PNG with one panel per entry of ``panels`` (name -> ``{"keypoints" (K, 2) input pixels, "scores"
    (K,)}``) over the crop ``pixels (S, S, 3) uint8``, drawn at 2x; joints peaking below ``VISIBLE_SCORE``
    faded, with a note on the panel."""
    from PIL import Image, ImageDraw

    pictures = []
    for name, pose in panels.items():
        picture = Image.fromarray(pixels).resize((pixels.shape[1] * 2, pixels.shape[0] * 2), Image.NEAREST)
        draw = ImageDraw.Draw(picture)
        points = [tuple(2 * p + 0.5) for p in np.asarray(pose["keypoints"], dtype=np.float64)]
        shown = np.asarray(pose["scores"]) >= VISIBLE_SCORE
        for a, b in edges:  # confident joints in colour, the others faded (a weak model is not blank)
            draw.line([points[a], points[b]], fill=(255, 220, 0) if shown[a] and shown[b] else FADED,
                      width=2 if shown[a] and shown[b] else 1)
        for point, keep in zip(points, shown, strict=True):
            r = 3 if keep else 2
            draw.ellipse([point[0] - r, point[1] - r, point[0] + r, point[1] + r],
                         outline=(255, 40, 40) if keep else FADED, width=2 if keep else 1)
        if not shown.all():
            draw.text((3, picture.height - 12), f"grey: peak < {VISIBLE_SCORE}", fill=FADED)
        draw.text((3, 2), name, fill=(255, 255, 0))
        pictures.append(np.asarray(picture))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(pictures, axis=1)).save(path)
    return path


def write_overlays(
    prediction: dict, datamodule, folder: Path, references: dict | None = None, split: str = "test"
) -> list[Path]:
    """One overlay per person of a ``predict_step`` output: source-only (where the method has a source
    model), this model and, when given, the ``references`` (``{"keypoints" (B, K, 2), "weight" (B, K)}``)."""
    spec, edges = datamodule.input_spec, datamodule.skeleton.edges
    written = []
    for row, index in enumerate(prediction["index"].tolist()):
        panels = {}
        if "source_keypoints" in prediction:
            panels["source-only"] = {
                "keypoints": prediction["source_keypoints"][row].cpu(),
                "scores": prediction["source_scores"][row].cpu(),
            }
        panels["this model"] = {
            "keypoints": prediction["keypoints"][row].cpu(),
            "scores": prediction["scores"][row].cpu(),
        }
        if references is not None:
            panels["reference"] = {
                "keypoints": references["keypoints"][row].cpu(),
                "scores": references["weight"][row].cpu(),
            }
        name = Path(datamodule.sample_name(split, index).replace("#", "_")).stem
        pixels = to_pixels(prediction["image"][row], spec.mean, spec.std)
        written.append(overlay_png(pixels, panels, edges, folder / f"{index:05d}_{name}.png"))
    return written


def coco_results(prediction: dict, datamodule) -> list[dict]:
    """COCO keypoint results of one ``predict_step`` output, keypoints mapped back to the original image
    through the exact inverse of each crop's affine."""
    out = []
    for row, index in enumerate(prediction["index"].tolist()):
        person = datamodule.splits["test"][index]
        inverse = invert(prediction["matrix"][row].double().cpu().numpy())
        points = warp_points(prediction["keypoints"][row].double().cpu().numpy(), inverse)
        scores = prediction["scores"][row].float().cpu().numpy()
        values = np.concatenate([points, scores[:, None]], axis=1).reshape(-1)
        out.append(
            {
                "image_id": person.image_id,
                "file_name": str(person.image),
                "person_id": person.person_id,
                "category_id": person.category_id,
                "keypoints": [round(float(v), 3) for v in values],
                "score": round(float(scores.mean()), 5),
            }
        )
    return out


class PoseWriter(BasePredictionWriter):
    """``keypoints.json`` and ``overlays/*.png`` in the run folder (the pose task's writer). Under DDP every
    rank predicts every person and rank 0 writes; crops are dropped once drawn."""

    def __init__(self):
        super().__init__(write_interval="batch_and_epoch")

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ):
        run = own_run_dir(trainer)
        if trainer.is_global_zero and run is not None:
            write_overlays(prediction, trainer.datamodule, run / "overlays")
        prediction["image"] = torch.empty(0)

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        run = own_run_dir(trainer)
        if not trainer.is_global_zero or run is None or not predictions:
            return
        results, seen = [], set()
        for batch in predictions:
            for entry in coco_results(batch, trainer.datamodule):
                if entry["person_id"] not in seen:
                    seen.add(entry["person_id"])
                    results.append(entry)
        (run / "keypoints.json").write_text(json.dumps(results, indent=1))
