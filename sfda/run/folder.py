"""The run's own folder and what a run records of its environment: commit, versions, JSON-safe values."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import lightning as L
import numpy as np
import torch

from .version import __version__


def git_commit(cwd: str | Path = ".") -> str | None:
    """HEAD commit of the git checkout at ``cwd`` (None outside one)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def versions() -> dict[str, str]:
    """The versions of python, torch, torchvision, lightning and sfda this run uses."""
    import torchvision  # loaded only when a run records its versions

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "lightning": L.__version__, "sfda": __version__}


def own_run_dir(trainer: L.Trainer) -> Path | None:
    """The run's own folder ``<root>/version_N``, or None when it has none (``fast_dev_run``'s dummy
    logger): sfda then writes no run files, so no run replaces another's. Reads ``trainer.log_dir``,
    a collective under DDP: call it on every rank."""
    log_dir = trainer.log_dir
    if log_dir is None or Path(log_dir).resolve() == Path(trainer.default_root_dir).resolve():
        return None
    return Path(log_dir)


def last_checkpoint(trainer: L.Trainer, run_dir: Path | None) -> Path | None:
    """The newest checkpoint a resumed run can start from: the checkpoint callbacks' ``last`` file, else
    ``<run dir>/checkpoints/last.ckpt``; None when neither exists yet."""
    candidates = [getattr(c, "last_model_path", "") for c in trainer.checkpoint_callbacks]
    if run_dir is not None:
        candidates.append(str(run_dir / "checkpoints" / "last.ckpt"))
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def json_safe(value):
    """``value`` with every NaN or infinite float replaced by None, so the file is valid JSON (``null``)."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
