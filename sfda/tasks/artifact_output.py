"""Where source training writes its artifact, so that no run destroys a model.

Every run writes ``<run dir>/source.pt`` (a new ``version_N`` folder per run). The recipe's
``artifact`` path, when given, gets a copy only after a complete run: ``fast_dev_run`` and
``limit_*_batches`` smoke runs never write outside their run directory (``fast_dev_run`` has none,
so it writes no artifact at all), and an existing file is replaced only with
``overwrite_artifact: true``. Both are checked before the first step.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from ..models import SourceArtifact
from ..run.folder import own_run_dir

RUN_ARTIFACT = "source.pt"


def cut_short(trainer: L.Trainer) -> str | None:
    """The trainer flag that makes this a smoke run (``fast_dev_run``, ``limit_*_batches``), or None."""
    if trainer.fast_dev_run:
        return "trainer.fast_dev_run"
    for split in ("train", "val"):
        limit = getattr(trainer, f"limit_{split}_batches")
        if not (isinstance(limit, float) and limit == 1.0):
            return f"trainer.limit_{split}_batches"
    return None


def run_artifact_path(trainer: L.Trainer) -> Path:
    """``<run dir>/source.pt`` (the default root when the run has no logger)."""
    return Path(trainer.log_dir or trainer.default_root_dir) / RUN_ARTIFACT


def check_writable(path: Path, overwrite: bool, field_name: str) -> None:
    """Refuse, before training, a destination that exists (unless ``overwrite``), is a folder, or whose
    nearest existing parent folder is not writable."""
    if path.is_dir():
        raise ValueError(f"{field_name}: '{path}' is a folder; expected a file path such as "
                         f"{path / RUN_ARTIFACT}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{field_name}: '{path}' already exists and is never replaced silently; choose "
                              "another path or set model.init_args.overwrite_artifact=true")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{field_name}: cannot write '{path}' ('{parent}' is not a writable folder)")


def has_own_run_dir(trainer: L.Trainer) -> bool:
    """False when the run has no ``version_N`` folder (``fast_dev_run``'s dummy logger)."""
    return own_run_dir(trainer) is not None


def check_destinations(trainer: L.Trainer, destination: str | None, overwrite: bool) -> None:
    """Before training: the run's own artifact and the recipe's ``artifact`` path can be written."""
    if has_own_run_dir(trainer) or cut_short(trainer) is None:
        check_writable(run_artifact_path(trainer), overwrite, "trainer.default_root_dir")
    if destination is not None and cut_short(trainer) is None:
        check_writable(Path(destination), overwrite, "model.artifact")


def write_artifact(trainer: L.Trainer, artifact: SourceArtifact, destination: str | None,
                   overwrite: bool) -> dict:
    """Save ``artifact`` into the run directory and, after a complete run, to ``destination`` (rank 0).
    Returns the ``results.json`` entries that say where it went."""
    own = run_artifact_path(trainer)
    reason = cut_short(trainer)
    out = {}
    if reason is not None and not has_own_run_dir(trainer):
        rank_zero_info(f"{reason}: no source artifact written (this run has no run folder of its own)")
    else:
        out["artifact"] = str(own)
        if trainer.is_global_zero:
            artifact.save(own)
    if destination is not None and reason is not None:
        out["artifact_copy_skipped"] = f"{reason} cut the run short; {destination} left as it was"
    if destination is not None and reason is None:
        check_writable(Path(destination), overwrite, "model.artifact")  # appeared during training?
        if trainer.is_global_zero:
            artifact.save(destination)
        out["artifact_copy"] = str(destination)
    return out


def source_input_spec(datamodule, expected: str):
    """The recipe's ``data.input`` of a source-training run (it has no artifact to adopt one from);
    refuses a recipe without it, saying what ``expected`` holds."""
    if datamodule.input_spec is None:
        raise ValueError(f"data.input: source training needs the input spec ({expected}) in the recipe")
    return datamodule.input_spec
