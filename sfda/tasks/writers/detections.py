"""``sfda predict`` output for detection: COCO-format ``detections.json`` and PNG overlays.

Boxes are written in pixels of the ORIGINAL image (tile offset and resize undone), COCO style
``[x, y, width, height]``; every image or tile is one entry of ``images`` with its file and window.
The overlays show the source model's boxes beside this model's where the method has a source
model (adaptation), on the image as the model saw it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from ...run.folder import own_run_dir

MIN_DRAWN_SCORE = 0.5  # overlays draw detections at least this confident; the JSON keeps every one


def to_original(boxes: torch.Tensor, window: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``(n, 4)`` boxes in input pixels -> pixels of the original image (``window (4,)``, ``scale (2,)``)."""
    factor = torch.cat([scale, scale]).to(boxes)
    return boxes * factor + torch.stack([window[0], window[1], window[0], window[1]]).to(boxes)


def coco_detections(
    image_id: int, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, class_names: list[str]
) -> list[dict]:
    """COCO result entries (``category_id`` is the 1-based class id)."""
    out = []
    for (x0, y0, x1, y1), score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist(), strict=True):
        out.append(
            {
                "image_id": image_id,
                "category_id": int(label) + 1,
                "category": class_names[int(label)],
                "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                "score": round(float(score), 5),
            }
        )
    return out


def overlay_png(image: torch.Tensor, panels: dict[str, dict], path: Path) -> Path:
    """PNG with one panel per entry of ``panels`` (name -> detections in input pixels) over ``image
    (3, S, S)``."""
    from PIL import Image, ImageDraw

    base = (image.permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)
    pictures = []
    for name, det in panels.items():
        picture = Image.fromarray(base.copy())
        draw = ImageDraw.Draw(picture)
        for box, score in zip(det["boxes"].tolist(), det["scores"].tolist(), strict=True):
            if score >= MIN_DRAWN_SCORE:
                draw.rectangle(box, outline=(255, 40, 40), width=2)
        draw.text((3, 2), name, fill=(255, 255, 0))
        pictures.append(np.asarray(picture))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(pictures, axis=1)).save(path)
    return path


def write_overlays(prediction: dict, images: torch.Tensor, datamodule, folder: Path,
                   references: list[dict] | None = None, split: str = "test") -> list[Path]:
    """One overlay PNG per image of a ``predict_step`` output on ``split`` in ``folder``: source-only (where
    the method has a source model), this model and, when given, the ``references`` boxes side by side."""
    written = []
    for row, index in enumerate(prediction["index"].tolist()):
        panels = {}
        if "source_detections" in prediction:
            panels["source-only"] = prediction["source_detections"][row]
        panels["this model"] = prediction["detections"][row]
        if references is not None:
            panels["reference"] = references[row]
        safe = datamodule.sample_name(split, index).replace("/", "_").replace(",", "_").replace("@", "_")
        written.append(overlay_png(images[row], panels, folder / f"{index:05d}_{Path(safe).stem}.png"))
    return written


class DetectionWriter(BasePredictionWriter):
    """``detections.json`` (COCO format, original-image pixels) and ``overlays/<image>.png`` (source-only
    and this model side by side for adaptation methods) in the run folder. The detection task's writer
    (``DetectionTask.configure_callbacks``); under DDP every rank predicts every image and rank 0 writes.
    Overlays are drawn per batch and the batch's images dropped, so a long prediction holds only boxes."""

    def __init__(self):
        super().__init__(write_interval="batch_and_epoch")

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ):
        images = prediction.pop("image")
        run = own_run_dir(trainer)
        if trainer.is_global_zero and run is not None:
            write_overlays(prediction, images, trainer.datamodule, run / "overlays")

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        run = own_run_dir(trainer)
        if not trainer.is_global_zero or run is None or not predictions:
            return
        dm = trainer.datamodule
        images, results, seen = [], [], set()
        for batch in predictions:
            for row, index in enumerate(batch["index"].tolist()):
                if index in seen:
                    continue
                seen.add(index)
                det = batch["detections"][row]
                window, scale = batch["window"][row].cpu(), batch["scale"][row].cpu()
                images.append(
                    {
                        "id": index,
                        "file_name": dm.sample_image("test", index),
                        "name": dm.sample_name("test", index),
                        "window": window.tolist(),
                    }
                )
                boxes = to_original(det["boxes"].cpu(), window, scale)
                results += coco_detections(
                    index, boxes, det["scores"].cpu(), det["labels"].cpu(), dm.class_names
                )
        categories = [{"id": i + 1, "name": n} for i, n in enumerate(dm.class_names)]
        payload = {"images": images, "categories": categories, "annotations": results}
        (run / "detections.json").write_text(json.dumps(payload, indent=1))
