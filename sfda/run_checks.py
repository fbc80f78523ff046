"""What the ``sfda`` command checks before a run starts, so that bad input fails by name and loses nothing.

- ``check_trainer_config``: a fit that would do zero steps (``max_epochs: 0``, ``max_steps: 0``,
  ``limit_train_batches: 0``) or a ``max_epochs`` below -1.
- ``resolve_checkpoint``: ``--ckpt_path last`` means the newest ``version_N/checkpoints/last.ckpt``
  under the recipe's run root; any checkpoint must be a readable Lightning checkpoint (read with
  ``weights_only=True``) of the same method.
- ``check_state_shapes``: a checkpoint's tensors must have this recipe's shapes.
- ``check_needs_checkpoint``: ``sfda test`` / ``predict`` / ``validate`` of a method that adapts
  needs the adapted checkpoint; without one it would report the source model as the result.
"""

from __future__ import annotations

from pathlib import Path

import torch


class RunConfigError(ValueError):
    """A command-line or recipe value that cannot give a meaningful run."""


def check_trainer_config(subcommand: str, trainer: dict) -> None:
    """Refuse trainer values that would make ``fit`` do nothing or that Lightning rejects with a
    traceback, and ``logger: false`` (a run without a folder of its own would overwrite another's)."""
    if trainer.get("logger") is False:
        raise RunConfigError("trainer.logger: false leaves the run without a folder of its own, so its "
                             "config, results and predictions would replace another run's; remove it "
                             "(sfda logs CSV and TensorBoard into runs/<recipe>/version_N)")
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps")
    if max_epochs is not None and max_epochs < -1:
        raise RunConfigError(f"trainer.max_epochs: expected -1 (no limit) or a count >= 1, got {max_epochs}")
    if max_steps is not None and max_steps < -1:
        raise RunConfigError(f"trainer.max_steps: expected -1 (no limit) or a count >= 1, got {max_steps}")
    if subcommand != "fit":
        return
    limits = {"max_epochs": max_epochs, "max_steps": max_steps,
              "limit_train_batches": trainer.get("limit_train_batches")}
    for name, value in limits.items():
        if value is not None and value == 0:
            raise RunConfigError(f"trainer.{name}: 0 means the run does no training step and writes no "
                                 "result; expected a positive value (or drop it for the recipe's default)")


SPECIAL_CHECKPOINTS = {"best": "sfda keeps the last checkpoint, and with a recipe selection.by the one a "
                               "label-free validator picked (--ckpt_path selected)",
                       "hpc": "sfda does not write SLURM requeue checkpoints",
                       "registry": "sfda uses no model registry"}


def checkpoint_method(model) -> str:
    """The name a checkpoint records for the module that wrote it: ``package.module.Class``."""
    return f"{type(model).__module__}.{type(model).__qualname__}"


def newest_last_checkpoint(root: Path) -> Path:
    """``root/version_N/checkpoints/last.ckpt`` of the largest N that has one; errors say where."""
    versions = sorted((p for p in root.glob("version_*") if p.name.split("_")[1].isdigit()),
                      key=lambda p: int(p.name.split("_")[1]), reverse=True)
    for version in versions:
        candidate = version / "checkpoints" / "last.ckpt"
        if candidate.is_file():
            return candidate
    looked = f"{len(versions)} run folders, {versions[-1].name}..{versions[0].name}" if versions else "no run"
    raise RunConfigError(f"--ckpt_path last: no checkpoints/last.ckpt under {root} ({looked} found); "
                         "expected a run of this recipe there, or pass --ckpt_path=<path to a .ckpt> (or set "
                         "trainer.default_root_dir)")


def read_checkpoint(path: Path) -> dict:
    """The checkpoint at ``path`` read as data (``weights_only=True``, memory-mapped); errors name it."""
    if not path.is_file():
        raise RunConfigError(f"--ckpt_path: {path} does not exist (expected a .ckpt written by sfda fit)")
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # not a zip archive: mmap impossible, read it plainly
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise RunConfigError(f"--ckpt_path: {path} is not a readable checkpoint ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''})") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise RunConfigError(f"--ckpt_path: {path} is not a Lightning checkpoint (no 'state_dict'); "
                             "expected a .ckpt from a run's checkpoints/ folder")
    return checkpoint


def check_checkpoint_method(path: Path, checkpoint: dict, model) -> None:
    """Refuse a checkpoint written by another method than the recipe's model (its weights and state
    would not fit, or would silently mean something else)."""
    written_by = (checkpoint.get("sfda") or {}).get("method")
    expected = checkpoint_method(model)
    if written_by is not None and written_by != expected:
        raise RunConfigError(f"--ckpt_path: {path} was written by {written_by}, but the recipe's model is "
                             f"{expected}; expected a checkpoint of the same method")
    own = set(model.state_dict())
    if written_by is None and own and not own & set(checkpoint["state_dict"]):
        raise RunConfigError(f"--ckpt_path: {path} holds none of the weights of {expected}; expected a "
                             "checkpoint of the same method")


def check_state_shapes(model, checkpoint: dict, path) -> None:
    """Refuse a checkpoint whose tensors have other shapes than the model's (per-sample state of a
    target set of another size, a head of another class count), naming the first keys and shapes."""
    own = model.state_dict()
    bad = [(key, tuple(value.shape), tuple(own[key].shape)) for key, value in checkpoint["state_dict"].items()
           if key in own and isinstance(value, torch.Tensor) and value.shape != own[key].shape]
    if bad:
        shown = "; ".join(f"{key}: {a} in the checkpoint, {b} for this recipe" for key, a, b in bad[:3])
        raise RunConfigError(f"--ckpt_path: {path} does not fit this recipe ({shown}); expected a checkpoint "
                             "of the same source model and target set (per-sample state is sized by the "
                             "number of target samples)")


def check_needs_checkpoint(subcommand: str, model, ckpt_path) -> None:
    """An adapting method evaluated without its checkpoint would report the source model as the result;
    a module that does not train (source-only) is refused by ``sfda fit`` before anything runs."""
    if subcommand == "fit" and getattr(model, "evaluates_without_checkpoint", False):
        raise RunConfigError(f"sfda fit: {type(model).__name__} does not train (the source model as it is is "
                             "the result); run `sfda test --config <recipe>` instead of `sfda fit`")
    if subcommand in ("test", "predict", "validate") and not ckpt_path \
            and not getattr(model, "evaluates_without_checkpoint", False):
        raise RunConfigError(f"sfda {subcommand}: {type(model).__name__} is trained by `sfda fit`; without "
                             "--ckpt_path this would report the untrained or unadapted model. Pass "
                             "--ckpt_path=<run>/checkpoints/last.ckpt (or --ckpt_path last), or evaluate "
                             "the source model with its source_only recipe")


class TrainingCollapsed(FloatingPointError):
    """Training fell into a degenerate solution (the predicted class marginal collapsed): like a NaN
    loss, the run stops and its last healthy checkpoint is kept."""
