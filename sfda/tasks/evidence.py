"""What a run keeps for ``sfda report``, written at the end of ``fit`` into ``<run>/report/``.

Each task module may implement ``report_evidence(folder)`` (``folder`` is None on ranks other than 0;
every rank calls it, as a target pass is a collective):

- classification: ``classification.npz`` with the evaluation split's labels, the predictions and
  normalised entropies before (source-only) and after adaptation, the features of a fixed subset of
  at most ``PROJECTED`` samples for the 2-D projection, and a gallery of samples the adaptation
  corrected and broke (see ``classification_evidence``);
- segmentation and detection: ``overlays/*.png``, source-only vs adapted (vs reference), drawn by the
  task's own prediction writer.

The evidence costs one more evaluation pass at the end of ``fit`` (classification reuses the last
validation's rows instead when that validation scored the whole split with the network as it ends, which is
what most runs do); ``--report_evidence=false`` skips it.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from ..data.transforms import to_pixels
from ..pseudo_labels import normalised_entropy
from ..run.folder import own_run_dir

PROJECTED = 2000  # samples in the 2-D feature projection
GALLERY = 12  # samples per gallery row (corrected, broken)
OVERLAYS = 3  # evaluation volumes or images drawn for segmentation and detection
EVIDENCE_DIR = "report"


def projection_subset(num_samples: int) -> np.ndarray:
    """Sorted positions of at most ``PROJECTED`` samples, the same for every pass over a split."""
    return np.sort(np.random.default_rng(0).permutation(num_samples)[:PROJECTED])


def kept_rows(rows: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """What the report needs of a classification pass (``index (N,)``, ``labels (N,)``, ``probs (N, C)``,
    ``features (N, D)``): all but the features, which are kept for ``projection_subset`` only."""
    subset = projection_subset(len(rows["index"]))
    kept = {k: rows[k].detach().cpu().numpy() for k in ("index", "labels", "probs")}
    kept["features"] = (
        rows["features"][torch.as_tensor(subset, device=rows["features"].device)].detach().cpu().numpy()
    )
    return kept


def classification_evidence(
    before: dict | None, after: dict, predict, threshold: float | None, class_names: list[str]
) -> dict[str, np.ndarray]:
    """The arrays of ``classification.npz``: ``label (N,)`` (-1 unlabelled), per ``when`` in before/after
    ``<when>_pred (N,)`` (``C`` = rejected as unknown), ``<when>_entropy (N,)`` (normalised),
    ``<when>_features (M, D)`` of ``projected (M,)``; ``threshold`` (NaN: closed set) and ``class_names``.
    ``before`` is None when the run did not score the source model (e.g. resumed from a checkpoint)."""
    out = {
        "label": after["labels"],
        "class_names": np.array(class_names),
        "projected": projection_subset(len(after["index"])),
        "threshold": np.float64(np.nan if threshold is None else threshold),
    }
    for when, rows in (("before", before), ("after", after)):
        if rows is None:
            continue
        probs = torch.as_tensor(rows["probs"]).float()
        out[f"{when}_pred"] = predict(probs).cpu().numpy()
        out[f"{when}_entropy"] = normalised_entropy(probs).cpu().numpy()
        out[f"{when}_features"] = rows["features"]
    return out


def gallery_picks(evidence: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Positions of up to ``GALLERY`` samples the adaptation corrected (wrong before, right after) and broke
    (right before, wrong after), drawn in a fixed random order."""
    if "before_pred" not in evidence or not (evidence["label"] >= 0).any():
        return {}
    label, before, after = evidence["label"], evidence["before_pred"], evidence["after_pred"]
    order = np.random.default_rng(1).permutation(len(label))
    picks = {
        "corrected": (before != label) & (after == label),
        "broken": (before == label) & (after != label),
    }
    return {kind: order[mask[order]][:GALLERY] for kind, mask in picks.items()}


def gallery_images(dataset, picks: dict[str, np.ndarray], spec) -> dict[str, np.ndarray]:
    """``gallery_<kind> (G, H, W, 3)`` uint8 and ``gallery_<kind>_at (G,)`` positions, read from ``dataset``
    (items indexed by position, as every sfda evaluation split is)."""
    out = {}
    for kind, positions in picks.items():
        images = [to_pixels(dataset[int(p)]["image"], spec.mean, spec.std) for p in positions]
        out[f"gallery_{kind}"] = (
            np.stack(images) if images else np.zeros((0, spec.size, spec.size, 3), np.uint8)
        )
        out[f"gallery_{kind}_at"] = positions
    return out


def write_npz(folder: Path, name: str, arrays: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    np.savez_compressed(path, **arrays)
    return path


class ReportEvidence(Callback):
    """Calls the module's ``report_evidence(folder)`` at the end of ``fit`` (every rank; the folder is
    ``<run>/report`` on rank 0 and None elsewhere). Modules without one keep no evidence."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        run = own_run_dir(trainer)  # a collective under DDP: every rank asks
        if run is None or not hasattr(pl_module, "report_evidence") or trainer.interrupted:
            return
        pl_module.report_evidence(run / EVIDENCE_DIR if trainer.is_global_zero else None)
