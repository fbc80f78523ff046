"""What the ``sfda`` command checks before a run starts, so that bad input fails by name and loses nothing.

- ``check_trainer_config``: a fit that would do zero steps (``max_epochs: 0``, ``max_steps: 0``,
  ``limit_train_batches: 0``) or a ``max_epochs`` below -1; an accelerator the machine lacks, devices
  it cannot give, an unknown strategy, ``num_nodes`` below 1, float64 precision (``check_accelerator``).
- ``newest_last_checkpoint`` / ``read_checkpoint``: ``--ckpt_path last`` means the newest
  ``version_N/checkpoints/last.ckpt`` under the recipe's run root; any checkpoint must be a readable
  Lightning checkpoint (read with ``weights_only=True``) of the same method. A folder, a dangling link
  or a source artifact given as a checkpoint is named for what it is.
- ``check_state_shapes`` / ``check_state_keys``: a checkpoint's tensors must fit this recipe's model; if
  not, the recipe fields that differ from the ones it was made with (``network_differences``) are named.
  Tensors that fit are not enough: the source's class names and input spec must be the recorded ones.
- ``check_needs_checkpoint``: ``sfda test`` / ``predict`` / ``validate`` of a method that adapts
  needs the adapted checkpoint; without one it would report the source model as the result.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
from pathlib import Path

import torch
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator, XLAAccelerator
from lightning.pytorch.strategies import StrategyRegistry


def closest(word: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or ''."""
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


class RunConfigError(ValueError):
    """A command-line or recipe value that cannot give a meaningful run."""


def check_trainer_config(subcommand: str, trainer: dict) -> None:
    """Refuse trainer values that would make ``fit`` do nothing or that Lightning rejects with a
    traceback, and ``logger: false`` (a run without a folder of its own would overwrite another's)."""
    if trainer.get("logger") is False:
        raise RunConfigError("trainer.logger: false leaves the run without a folder of its own, so its "
                             "config, results and predictions would replace another run's; remove it "
                             "(sfda logs CSV and TensorBoard into runs/<recipe>/version_N)")
    check_accelerator(trainer.get("accelerator"), trainer.get("devices"))
    check_strategy(trainer.get("strategy"))
    check_precision(trainer.get("precision"))
    num_nodes = trainer.get("num_nodes")
    if isinstance(num_nodes, int) and num_nodes < 1:
        raise RunConfigError(f"trainer.num_nodes: expected a count of machines >= 1, got {num_nodes}")
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


# accelerator names Lightning accepts, and what each needs of the machine
ACCELERATORS = {"cpu": "the CPU", "gpu": "a CUDA or Apple MPS GPU", "cuda": "a CUDA GPU",
                "mps": "an Apple MPS GPU", "tpu": "a TPU and torch_xla", "auto": ""}
AVAILABLE = {"cpu": lambda: True, "auto": lambda: True, "cuda": lambda: CUDAAccelerator.is_available(),
             "mps": lambda: MPSAccelerator.is_available(), "tpu": lambda: XLAAccelerator.is_available(),
             "gpu": lambda: CUDAAccelerator.is_available() or MPSAccelerator.is_available()}
FIX = "use --trainer.accelerator=cpu, or auto (a GPU when the machine has one, else the CPU)"


def check_accelerator(accelerator, devices) -> None:
    """Refuse an accelerator this machine does not have, and devices it cannot give (more GPUs than
    it has, GPU ids on the CPU), by field with what was found and the fix, before Lightning's
    ``MisconfigurationException``."""
    if accelerator is not None and not isinstance(accelerator, str):
        return  # an Accelerator object the recipe built: Lightning checks it
    name = (accelerator or "auto").lower()
    if name not in ACCELERATORS:
        raise RunConfigError(f"trainer.accelerator: '{accelerator}' is not an accelerator; expected one of "
                             f"{', '.join(ACCELERATORS)}")
    if not AVAILABLE[name]():
        found = f"{CUDAAccelerator.auto_device_count()} CUDA devices, MPS "
        found += "available" if MPSAccelerator.is_available() else "not available"
        raise RunConfigError(f"trainer.accelerator: '{accelerator}' needs {ACCELERATORS[name]}, which this "
                             f"machine does not have ({found}); {FIX}")
    on_cuda = name in ("gpu", "cuda", "auto") and CUDAAccelerator.is_available()
    on_cpu = name == "cpu" or (name == "auto" and not AVAILABLE["gpu"]())
    check_devices(devices, CUDAAccelerator.auto_device_count() if on_cuda else None, on_cpu)


def requested_devices(devices) -> tuple[int | None, list[int]]:
    """``(count, ids)`` that ``trainer.devices`` asks for: ``"auto"`` and -1 ask for none in particular."""
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    elif isinstance(devices, str) and "," in devices:
        devices = [int(d) for d in devices.split(",") if d.strip().isdigit()]
    if isinstance(devices, int) and (devices == 0 or devices < -1):
        raise RunConfigError(f"trainer.devices: {devices}; expected a count >= 1, -1 (all), GPU ids such as "
                             "[0, 1], or auto")
    if isinstance(devices, int) and devices > 0:
        return devices, []
    if isinstance(devices, (list, tuple)):
        return None, [int(d) for d in devices]
    return None, []


def check_devices(devices, gpus: int | None, on_cpu: bool) -> None:
    """``trainer.devices`` against the ``gpus`` CUDA devices of a CUDA run (None: not one), or a CPU run."""
    count, ids = requested_devices(devices)
    if on_cpu and ids:
        raise RunConfigError(f"trainer.devices: {devices} names GPU ids, but the run is on the CPU; "
                             "expected a process count (e.g. 2) or auto")
    if gpus is None:
        return
    wanted = count or (max(ids) + 1 if ids else 0)
    if wanted > gpus:
        asked = f"GPU ids {ids}" if ids else f"{wanted} GPUs"
        raise RunConfigError(f"trainer.devices: {devices} asks for {asked} but this machine has {gpus} "
                             f"(ids 0..{gpus - 1}); expected at most {gpus}, or -1 (all of them)")


# the package a registered strategy needs installed, by the module of its class (the last name)
STRATEGY_PACKAGES = {"deepspeed": ("deepspeed", "pip install deepspeed"),
                     "xla": ("torch_xla", "pip install torch_xla (on a TPU machine)"),
                     "single_xla": ("torch_xla", "pip install torch_xla (on a TPU machine)")}


def check_strategy(strategy) -> None:
    """A strategy named by a string must be one Lightning registers (or auto), else the closest name; one
    that needs a package (DeepSpeed, torch_xla) needs it installed, else the package and the fix."""
    if not isinstance(strategy, str) or strategy == "auto":
        return
    names = sorted(StrategyRegistry.available_strategies())
    if strategy not in names:
        raise RunConfigError(f"trainer.strategy: '{strategy}' is not a strategy{closest(strategy, names)} "
                             "(expected auto, ddp, ddp_spawn, fsdp, ... or a Strategy class_path)")
    module = StrategyRegistry[strategy]["strategy"].__module__.rpartition(".")[2]
    package, install = STRATEGY_PACKAGES.get(module, (None, None))
    if package is not None and importlib.util.find_spec(package) is None:
        raise RunConfigError(f"trainer.strategy: '{strategy}' needs the {package} package, which is not "
                             f"installed; install it ({install}) or use a strategy without it (auto, ddp, "
                             "fsdp)")


def check_precision(precision) -> None:
    """Double precision is refused by name: sfda's data and networks are float32 (inputs would not
    match the weights' dtype)."""
    if str(precision) in ("64", "64-true", "double"):
        raise RunConfigError(f"trainer.precision: {precision} (float64) is not supported: sfda's inputs are "
                             "float32; expected 32, 16-mixed or bf16-mixed")


SPECIAL_CHECKPOINTS = {"best": "sfda keeps the last checkpoint, and with a recipe selection.by the one a "
                               "label-free validator picked (--ckpt_path selected)",
                       "hpc": "sfda does not write SLURM requeue checkpoints",
                       "registry": "sfda uses no model registry"}


def checkpoint_method(model) -> str:
    """The name a checkpoint records for the module that wrote it: ``package.module.Class``."""
    return f"{type(model).__module__}.{type(model).__qualname__}"


def newest_last_checkpoint(root: Path) -> Path:
    """``root/version_N/checkpoints/last.ckpt`` of the largest N that has one; errors say where. A newer
    run's dangling ``last.ckpt`` is refused, never skipped for an older run's."""
    versions = sorted((p for p in root.glob("version_*") if p.name.split("_")[1].isdigit()),
                      key=lambda p: int(p.name.split("_")[1]), reverse=True)
    for version in versions:
        candidate = version / "checkpoints" / "last.ckpt"
        check_not_dangling(candidate, "--ckpt_path last")
        if candidate.is_file():
            return candidate
    looked = f"{len(versions)} run folders, {versions[-1].name}..{versions[0].name}" if versions else "no run"
    raise RunConfigError(f"--ckpt_path last: no checkpoints/last.ckpt under {root} ({looked} found); "
                         "expected a run of this recipe there, or pass --ckpt_path=<path to a .ckpt> (or set "
                         "trainer.default_root_dir)")


def check_not_dangling(path: Path, field: str) -> None:
    """Refuse a link whose target is gone (a ``last.ckpt`` whose epoch file was deleted), naming both."""
    if path.is_symlink() and not path.exists():
        target = Path(path.parent, path.readlink())
        raise RunConfigError(f"{field}: {path} is a link to {target}, which does not exist (deleted or "
                             f"moved); expected a link to a .ckpt file{checkpoints_in(path.parent)}")


def checkpoints_in(folder: Path, shown: int = 3) -> str:
    """``, e.g. <folder>/checkpoints/last.ckpt``, else the first .ckpt files up to four folders down (runs/
    holds ``<recipe>/version_N/checkpoints/*.ckpt``), ``last.ckpt`` first, else that there is none."""
    last = folder / "checkpoints" / "last.ckpt"
    patterns = ("*.ckpt", "*/*.ckpt", "*/*/*.ckpt", "*/*/*/*.ckpt")
    found = sorted((p for pattern in patterns for p in folder.glob(pattern) if p.is_file()),
                   key=lambda p: (p.name != "last.ckpt", str(p)))
    if last.is_file():
        return f", e.g. {last}"
    if found:
        more = f" and {len(found) - shown} more" if len(found) > shown else ""
        return f" such as {', '.join(str(p) for p in found[:shown])}{more}"
    return f" ({folder} holds no .ckpt file)"


def read_checkpoint(path: Path) -> dict:
    """The checkpoint at ``path`` read as data (``weights_only=True``, memory-mapped); errors name it."""
    check_not_dangling(path, "--ckpt_path")
    if path.is_dir():
        raise RunConfigError(f"--ckpt_path: {path} is a folder; expected a .ckpt file{checkpoints_in(path)}")
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
    if isinstance(checkpoint, dict) and str(checkpoint.get("format", "")).startswith("sfda-source"):
        raise RunConfigError(f"--ckpt_path: {path} is a source artifact, not a run's checkpoint; give it as "
                             "model.init_args.source, and as --ckpt_path a .ckpt from a run's checkpoints/ "
                             "folder (or none, for the source model as it is: its source_only recipe)")
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


# hyper-parameters Lightning and jsonargparse add that are not recipe fields
NOT_RECIPE_FIELDS = ("_class_path", "_instantiator")


def input_record(spec) -> dict | None:
    """An artifact's input spec (size, channels, normalisation...) as plain JSON data, or None."""
    to_dict = getattr(spec, "to_dict", None)
    try:
        return json.loads(json.dumps(to_dict())) if to_dict is not None else None
    except (TypeError, ValueError):
        return None


def network_record(model) -> dict:
    """What a checkpoint records of the network it was made for: the source artifact's architecture, its
    constructor arguments and class count, flat (``{"architecture": ..., "kwargs.bottleneck_dim": 16}``),
    then what identifies the source model beyond its shapes: its class names in output order and its input
    spec; {} for a module without a source artifact (its network is chosen by its hyper-parameters)."""
    artifact = getattr(model, "artifact", None)
    architecture = getattr(artifact, "architecture", None)
    if not isinstance(architecture, dict):
        return {}
    record = {"architecture": architecture.get("target"), "classes": len(artifact.class_names)}
    record.update({f"kwargs.{k}": v for k, v in (architecture.get("kwargs") or {}).items()})
    record["class_names"] = [str(name) for name in artifact.class_names]
    spec = input_record(getattr(artifact, "input", None))
    if spec is not None:
        record["input"] = spec
    return record


IDENTITY = ("class_names", "input")  # recorded fields that tell two sources of the same shapes apart


def shown_names(names: list) -> str:
    """A class-name list for a message: whole up to 12 names, else the first 10 and the count."""
    return repr(list(names)) if len(names) <= 12 else f"{list(names)[:10]!r}[:10] of {len(names)}"


def identity_differences(recorded: dict, ours: dict) -> list[str]:
    """The ``IDENTITY`` fields that both records hold and that differ, each with both values."""
    out = []
    for key in IDENTITY:
        if key not in recorded or key not in ours or recorded[key] == ours[key]:
            continue
        if key == "class_names":
            out.append(f"class names {shown_names(recorded[key])} in the checkpoint, "
                       f"{shown_names(ours[key])} in the recipe's source")
        else:
            out.append(f"input spec {recorded[key]} in the checkpoint, {ours[key]} in the recipe's source")
    return out


def check_network_identity(model, checkpoint: dict, path) -> None:
    """Refuse a checkpoint made from another source model than the recipe's although its tensors fit (other
    class names or class order, another input spec): its outputs would be read as the wrong classes."""
    recorded = (checkpoint.get("sfda") or {}).get("network") or {}
    ours = network_record(model)
    differ = identity_differences(recorded, ours)
    if differ:
        origin = getattr(model.artifact, "origin", "") or "artifact"
        raise RunConfigError(f"--ckpt_path: {path} was made from another source model than the recipe's "
                             f"model.init_args.source {origin}: {'; '.join(differ)}. Expected the source "
                             "the checkpoint was adapted from (or a checkpoint adapted from this source)")


def _differences(theirs: dict, ours: dict, ignore=()) -> list[tuple[str, object, object]]:
    """``(key, checkpoint value, recipe value)`` for every key whose values differ."""
    keys = [k for k in dict.fromkeys([*theirs, *ours]) if k not in ignore]
    return [(k, theirs.get(k, "(absent)"), ours.get(k, "(absent)")) for k in keys
            if theirs.get(k, "(absent)") != ours.get(k, "(absent)")]


def network_differences(model, checkpoint: dict) -> list[str]:
    """The recipe fields whose values differ from the ones the checkpoint was made with: the source
    artifact's architecture where both sides record one (the same architecture: [], the mismatch is
    elsewhere, e.g. per-sample state), else the module's hyper-parameters."""
    recorded = (checkpoint.get("sfda") or {}).get("network") or {}
    ours = network_record(model)
    if recorded and ours:
        origin = getattr(model.artifact, "origin", "") or "artifact"
        return [f"model.init_args.source {key}: {a!r} in the checkpoint, {b!r} in the recipe's source "
                f"{origin}" for key, a, b in _differences(recorded, ours, IDENTITY)]
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    own = dict(getattr(model, "hparams", {}) or {})
    return [f"model.init_args.{key}: {a!r} in the checkpoint, {b!r} in the recipe"
            for key, a, b in (_differences(hparams, own, NOT_RECIPE_FIELDS) if hparams and own else [])]


def misshaped_keys(own: dict, state: dict) -> list[str]:
    """The tensors of ``state`` (a checkpoint's) whose shapes differ from ``own`` (the model's)."""
    return [f"{key}: {tuple(value.shape)} in the checkpoint, {tuple(own[key].shape)} for this recipe"
            for key, value in state.items()
            if key in own and isinstance(value, torch.Tensor) and value.shape != own[key].shape]


def absent_keys(own: dict, state: dict) -> list[str]:
    """The model's tensors missing from ``state``, then ``state``'s that the model does not have."""
    return ([f"{key}: missing from the checkpoint" for key in own if key not in state]
            + [f"{key}: in the checkpoint, not in this recipe's model" for key in state if key not in own])


def refuse_checkpoint(model, checkpoint: dict, path, bad: list[str]) -> None:
    """Raise for a checkpoint whose tensors ``bad`` do not fit ``model``: the recipe fields that differ
    from the ones it was made with (``network_differences``), else the first keys."""
    shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
    fields = network_differences(model, checkpoint)
    if fields:
        raise RunConfigError(f"--ckpt_path: {path} was made for another network than this recipe's: "
                             f"{'; '.join(fields[:5])}. Expected the recipe the checkpoint was made with "
                             f"(its tensors do not fit: {shown})")
    raise RunConfigError(f"--ckpt_path: {path} does not fit this recipe ({shown}); expected a checkpoint "
                         "of the same network (source model, backbone, class count) and target set "
                         "(per-sample state is sized by the number of target samples)")


def check_state_shapes(model, checkpoint: dict, path) -> None:
    """Refuse a checkpoint whose tensors have other shapes than the model's (made for another network:
    another bottleneck or class count; or per-sample state of a target set of another size), before
    Lightning's strict load prints its key list (``refuse_checkpoint``); then one whose tensors fit but
    whose source model had other class names or another input spec (``check_network_identity``)."""
    bad = misshaped_keys(model.state_dict(), checkpoint["state_dict"])
    if bad:
        refuse_checkpoint(model, checkpoint, path, bad)
    check_network_identity(model, checkpoint, path)


def check_state_keys(model, state: dict, path) -> None:
    """At the strict load of the checkpoint at ``path`` (after every ``on_load_checkpoint`` hook had its
    say): refuse tensors missing from it or unknown to the model (another backbone) by
    ``refuse_checkpoint``, instead of torch's key list."""
    bad = absent_keys(model.state_dict(), state)
    if bad:
        refuse_checkpoint(model, read_checkpoint(Path(path)), path, bad)


def check_needs_checkpoint(subcommand: str, model, ckpt_path, online: bool = False) -> None:
    """An adapting method evaluated without its checkpoint would report the source model as the result;
    a module that does not train (source-only) is refused by ``sfda fit`` before anything runs, except
    ``online`` (a stream, which ``sfda fit`` passes over predicting each batch)."""
    if subcommand == "fit" and getattr(model, "evaluates_without_checkpoint", False) and not online:
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
