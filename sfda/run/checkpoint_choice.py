"""Checkpoint selection by a label-free validator (a recipe's ``selection: {by, mode}``).

At every validation the validator's value (``label_free/<name>``, gathered over processes, so the
same on every rank) is compared with the best so far; a better one writes
``checkpoints/selected.ckpt``. ``results.json`` records ``selected/epoch``, ``selected/by``,
``selected/mode``, ``selected/score``, ``selected/checkpoint`` and, for reporting only, the
evaluation metrics logged at that validation (``selected/target/acc`` where the evaluation split
has labels). Target labels never choose: only the validator does. ``sfda test`` / ``predict``
without ``--ckpt_path`` then use the selected checkpoint of the recipe's newest fit run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import lightning as L
from lightning.pytorch.callbacks import Callback

from .checks import RunConfigError
from .folder import own_run_dir

SELECTED_NAME = "selected.ckpt"


class BestSoFar:
    """The best score seen so far (``mode`` max or min; a non-finite score is never best, a tie keeps
    the first) and what was kept with it; ``state_dict`` goes into checkpoints, so a resumed run
    compares with the best of the epochs before the stop."""

    def __init__(self, mode: Literal["max", "min"] = "max"):
        if mode not in ("max", "min"):
            raise ValueError(f"{type(self).__name__}.mode: expected max or min, got {mode!r}")
        self.mode = mode
        self.best: dict | None = None

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = state_dict.get("best")

    def better(self, score: float) -> bool:
        if not math.isfinite(score):
            return False
        if self.best is None:
            return True
        return score > self.best["score"] if self.mode == "max" else score < self.best["score"]


class ValidatorSelection(BestSoFar, Callback):
    """Keep the checkpoint of the validation where ``by`` was best (``mode``).

    Args:
        by: the logged key of the validator, e.g. ``label_free/im`` (``sfda.metrics.validators.
            check_selection`` checks a recipe's value and gives its mode).
        mode: ``max`` or ``min``, the validator's direction.
    """

    def __init__(self, by: str, mode: Literal["max", "min"]):
        super().__init__(mode)
        self.by = by

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = trainer.callback_metrics
        if self.by not in metrics:
            logged = sorted(k for k in metrics if k.startswith("label_free/"))
            raise RunConfigError(
                f"selection.by = {self.by}: {type(pl_module).__name__} does not log it (it logs "
                f"{logged}); view_agreement needs data.init_args.eval_strong_view=true, "
                "teacher_agreement a method with an EMA teacher"
            )
        score = float(metrics[self.by])
        run = own_run_dir(trainer)
        if not self.better(score) or run is None:
            return
        path = run / "checkpoints" / SELECTED_NAME
        trainer.save_checkpoint(path)
        prefix = f"{getattr(pl_module, 'eval_prefix', 'target')}/"  # the task's evaluation scores
        reported = {k: float(v) for k, v in metrics.items() if k.startswith(prefix) and v.numel() == 1}
        self.best = {"epoch": trainer.current_epoch, "score": score, "reported": reported}
        results = getattr(pl_module, "results", None)
        if results is not None:
            for key in [k for k in results if k.startswith("selected/")]:
                del results[key]
            results.update(
                {
                    "selected/epoch": trainer.current_epoch,
                    "selected/by": self.by,
                    "selected/mode": self.mode,
                    "selected/score": score,
                    "selected/checkpoint": str(Path("checkpoints") / SELECTED_NAME),
                }
            )
            results.update({f"selected/{k}": v for k, v in reported.items()})


def newest_selected_checkpoint(root: Path) -> Path | None:
    """``checkpoints/selected.ckpt`` of the newest FIT run under ``root``; None when that run selected
    nothing (its last epoch is then the result: a user asks for it with ``--ckpt_path``)."""
    versions = sorted((p for p in root.glob("version_*") if p.name.split("_")[1].isdigit()),
                      key=lambda p: int(p.name.split("_")[1]), reverse=True)
    for version in versions:
        try:
            stage = json.loads((version / "run_info.json").read_text()).get("stage")
            results = json.loads((version / "results.json").read_text())
        except (OSError, ValueError):
            continue  # a test run, or a run that ended before writing its records
        if stage != "fit":
            continue
        recorded = results.get("selected/checkpoint")
        return version / recorded if recorded and (version / recorded).is_file() else None
    return None
