"""The classification task's prediction writer: ``predictions.csv``."""

from __future__ import annotations

import csv

import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from ...run.folder import own_run_dir


class PredictionCSV(BasePredictionWriter):
    """``sfda predict`` output: ``predictions.csv`` with index, predicted class id and name, confidence.
    A sample the method rejects has class id ``num_classes`` and the name ``unknown``."""

    def __init__(self):
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        if not predictions:
            return
        rows = {k: torch.cat([p[k] for p in predictions]) for k in ("index", "prediction", "confidence")}
        gathered = {k: pl_module.all_gather(v).reshape(-1).cpu()
                    for k, v in rows.items()} if trainer.world_size > 1 else rows
        log_dir = own_run_dir(trainer)
        if not trainer.is_global_zero or log_dir is None:
            return
        names = getattr(trainer.datamodule, "class_names", None) or []
        order = torch.argsort(gathered["index"])
        path = log_dir / "predictions.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["index", "prediction", "class_name", "confidence"])
            seen = set()
            for i in order.tolist():
                index = int(gathered["index"][i])
                if index in seen:
                    continue
                seen.add(index)
                pred = int(gathered["prediction"][i])
                name = names[pred] if pred < len(names) else ("unknown" if pred == len(names) else str(pred))
                writer.writerow([index, pred, name, f"{float(gathered['confidence'][i]):.6f}"])
