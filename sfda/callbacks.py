"""Callbacks every `sfda` run gets: run record, results.json, per-epoch seeding, prediction CSV."""

from __future__ import annotations

import csv
import json
import os
import platform
import random
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from .metrics.validators import MARGINAL_ENTROPY, PREFIX
from .run_checks import TrainingCollapsed, checkpoint_method, network_record

# the collapse guard stops a run when the entropy of its predicted class marginal falls below this fraction
# of the source model's: one class predicted gives 0; a target that legitimately holds only k of the
# source's C classes gives about log k / log C of it (2 of 10: 0.30, 6 of 12: 0.72), above the fraction
COLLAPSE_FRACTION = 0.2


def git_commit(cwd: str | Path = ".") -> str | None:
    """HEAD commit of the git checkout at ``cwd`` (None outside one)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def versions() -> dict[str, str]:
    import lightning
    import torchvision

    import sfda

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "lightning": lightning.__version__,
            "sfda": getattr(sfda, "__version__", "unknown")}


def _scalar(value) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def task_name(pl_module: L.LightningModule) -> str:
    """The task of a run's module: the task it holds, else the one task its class works on, else "unknown"."""
    task = getattr(pl_module, "task", None)
    if task is not None:
        return task.name
    tasks = getattr(type(pl_module), "tasks", ())
    return tasks[0] if len(tasks) == 1 else "unknown"


def own_run_dir(trainer: L.Trainer) -> Path | None:
    """The run's own folder ``<root>/version_N``, or None when it has none (``fast_dev_run``'s dummy
    logger): sfda then writes no run files, so no run replaces another's. Reads ``trainer.log_dir``,
    a collective under DDP: call it on every rank."""
    log_dir = trainer.log_dir
    if log_dir is None or Path(log_dir).resolve() == Path(trainer.default_root_dir).resolve():
        return None
    return Path(log_dir)


@dataclass(frozen=True)
class RunStop:
    """A run that a signal stopped (SIGTERM from a scheduler or ``kill``, SIGINT from Ctrl-C): what
    ``sfda.cli.main`` reports and exits with (128 + the signal's number)."""

    signal: signal.Signals
    stage: str
    epoch: int  # the epoch it was in, 1-based as the console prints it
    max_epochs: int
    step: int
    run_dir: Path | None
    checkpoint: Path | None  # the newest checkpoint to resume from, None before the first
    is_global_zero: bool


_stops: list[RunStop] = []  # recorded by RunRecorder.on_exception, taken by the cli


def stop_signal(err: BaseException) -> signal.Signals | None:
    """The signal behind ``err``: SIGTERM (Lightning's ``SIGTERMException``), SIGINT (``KeyboardInterrupt``);
    None for any other error."""
    if isinstance(err, SIGTERMException):
        return signal.SIGTERM
    if isinstance(err, KeyboardInterrupt):
        return signal.SIGINT
    return None


def take_stop() -> RunStop | None:
    """The stop this process recorded last (None if none), forgetting it."""
    stop = _stops[-1] if _stops else None
    _stops.clear()
    return stop


def last_checkpoint(trainer: L.Trainer, run_dir: Path | None) -> Path | None:
    """The newest checkpoint a resumed run can start from: the checkpoint callbacks' ``last`` file, else
    ``<run dir>/checkpoints/last.ckpt``; None when neither exists yet."""
    candidates = [getattr(c, "last_model_path", "") for c in trainer.checkpoint_callbacks]
    if run_dir is not None:
        candidates.append(str(run_dir / "checkpoints" / "last.ckpt"))
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


class StopTogether(Callback):
    """Every process of a run stops at the same training step after a SIGTERM, and none hangs.

    Lightning's SIGTERM handler broadcasts from inside the signal handler, wherever each process happens to
    be: under DDP with one process in a collective of an engine pass and another elsewhere, both hang (seen
    with 2 CPU processes). This replaces that handler (before Lightning installs it, at ``setup``) with one
    that only notes the signal and passes it on to the processes Lightning launched; after every training
    step the processes agree (an all-reduce of the note) and all raise Lightning's stop at that step. On
    one process, or outside ``fit``, the note stops the run directly, as Lightning's handler does;
    ``predict``, whose loop Lightning never stops, stops after the batch the signal came in (all processes
    together)."""

    def __init__(self):
        self.received = False
        self.trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.received, self.trainer = False, trainer
        trainer._signal_connector._sigterm_notifier_fn = self.notify  # read when the handlers are installed

    def notify(self, signum, frame) -> None:
        """The SIGTERM handler: note it, pass it on once to launched processes; no collective here."""
        trainer = self.trainer
        if not self.received and trainer.strategy.launcher is not None:
            trainer.strategy.launcher.kill(signum)
        self.received = True
        if trainer.world_size == 1 or trainer.state.fn != "fit":
            trainer._signal_connector.received_sigterm = True

    def agreed(self, trainer, pl_module) -> bool:
        """Whether any process noted a SIGTERM, here or in Lightning's flag (an all-reduce of the note under
        DDP: run on every rank)."""
        received = self.received or trainer.received_sigterm
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            noted = torch.tensor([float(received)], device=pl_module.device)
            torch.distributed.all_reduce(noted, op=torch.distributed.ReduceOp.MAX)
            return noted.item() > 0
        return received

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.world_size > 1 and self.agreed(trainer, pl_module):
            trainer._signal_connector.received_sigterm = True  # every process, at this step: Lightning stops

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        """Lightning's predict loop never reads the SIGTERM note (fit, validate and test do): stop here, every
        process at the same batch, as they do."""
        if self.agreed(trainer, pl_module):
            raise SIGTERMException


def json_safe(value):
    """``value`` with every NaN or infinite float replaced by None, so the file is valid JSON (``null``)."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class RunRecorder(Callback):
    """Writes ``run_info.json`` (seed, versions, git commit, command) at start and
    ``results.json`` (flat metric keys, ``wall_s``) at the end of fit and of test, rank 0 only.

    Timings in ``results.json``: ``timing/epoch_s`` (mean wall seconds of a training epoch of
    this session, from epoch start to epoch end, so including per-epoch engine passes and any
    validation run inside the epoch), ``timing/validation_s`` (those validations' seconds),
    ``timing/steps_s`` (mean wall seconds from an epoch's first training batch to its last: the steps
    and the data loading between them, not the engine pass before nor the validation after; a
    validation inside the epoch, ``val_check_interval`` < 1, falls inside it),
    ``timing/train_images_per_s`` (global training images per second of epoch time) and
    ``timing/<phase>_s`` from the module's stopwatch (``engine``: pseudo-label passes, clustering, bank
    writes and kNN within epochs; ``bank_fill``: the initial bank pass; ``evaluation``: source-only
    evaluation) and ``timing/engine_share`` = engine / epoch time.

    A run stopped by a signal (SIGTERM, Ctrl-C) still writes ``results.json``, with what it measured so far
    and ``stopped: true``, ``stopped/signal`` (``SIGTERM``, ``SIGINT``), ``stopped/epoch`` (1-based),
    ``stopped/step`` and ``stopped/checkpoint`` (the one to resume from, or null); a run the collapse guard
    stopped writes it with ``collapsed: true`` and the guard's figures (``collapsed/*``, see
    ``CollapseGuard``).
    """

    def __init__(self):
        self.started = time.time()
        self.epoch_seconds: list[float] = []
        self.steps_seconds: list[float] = []  # first batch start -> last batch end, per epoch
        self._first_batch_started: float | None = None
        self._last_batch_ended = 0.0
        self.validation_seconds = 0.0  # validations inside fit epochs (part of the epoch seconds)
        self._epoch_started = self._validation_started = 0.0
        self.written: set[Path] = set()  # results files this recorder wrote (a later stage adds to them)
        self.run_dir: Path | None = None  # found at setup: on_exception must not call a collective

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.started = time.time()
        log_dir = self.run_dir = own_run_dir(trainer)
        if trainer.is_global_zero and log_dir:
            method = type(pl_module)
            info = {"stage": stage, "task": task_name(pl_module), "method": method.__name__,
                    "method_class": f"{method.__module__}.{method.__name__}",
                    "seed": int(os.environ.get("PL_GLOBAL_SEED", -1)), "versions": versions(),
                    "git_commit": git_commit(), "processes": trainer.world_size,
                    "precision": str(trainer.precision), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            (Path(log_dir) / "run_info.json").write_text(json.dumps(info, indent=2))

    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_started = time.perf_counter()
        self._first_batch_started = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._first_batch_started is None:
            self._first_batch_started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._last_batch_ended = time.perf_counter()

    def on_validation_start(self, trainer, pl_module):
        self._validation_started = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.validation_seconds += time.perf_counter() - self._validation_started

    def on_train_epoch_end(self, trainer, pl_module):
        self.epoch_seconds.append(time.perf_counter() - self._epoch_started)
        if self._first_batch_started is not None:
            self.steps_seconds.append(self._last_batch_ended - self._first_batch_started)
        # per epoch in metrics.csv for `sfda report`; results.json keeps the mean (timing/epoch_s)
        pl_module.log("time/epoch_s", self.epoch_seconds[-1], on_step=False, on_epoch=True, sync_dist=False)

    def _timings(self, trainer, pl_module) -> dict[str, float]:
        out = {f"timing/{phase}_s": seconds
               for phase, seconds in getattr(pl_module, "stopwatch", None).totals.items()} \
            if hasattr(pl_module, "stopwatch") else {}
        if self.epoch_seconds:
            epoch_s = sum(self.epoch_seconds) / len(self.epoch_seconds)
            out["timing/epoch_s"] = epoch_s
            global_batch = (getattr(trainer.datamodule, "batch_size", None) if trainer.datamodule is not None
                            else None)
            if global_batch and trainer.num_training_batches not in (None, float("inf")):
                out["timing/train_images_per_s"] = trainer.num_training_batches * global_batch / epoch_s
            out["timing/validation_s"] = self.validation_seconds
            if self.steps_seconds:
                out["timing/steps_s"] = sum(self.steps_seconds) / len(self.steps_seconds)
            if "timing/engine_s" in out:
                out["timing/engine_share"] = out["timing/engine_s"] / sum(self.epoch_seconds)
        return out

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str,
               extra: dict | None = None) -> None:
        """``results.json``; ``extra`` (a stopped run's record) is written last, from the run folder found at
        setup (no collective: the other processes may be stopping too)."""
        log_dir = own_run_dir(trainer) if extra is None else self.run_dir
        if not trainer.is_global_zero or not log_dir:
            return
        path = Path(log_dir) / "results.json"
        results = json.loads(path.read_text()) if path in self.written else {}
        results.update(getattr(pl_module, "results", {}))
        for key, value in trainer.callback_metrics.items():  # what this run measured wins
            if not key.startswith("time/") and (number := _scalar(value)) is not None:
                results[key] = number
        if stage == "fit":
            results.update(self._timings(trainer, pl_module))
        results[f"{stage}/wall_s"] = time.time() - self.started
        results["wall_s"] = results[f"{stage}/wall_s"]
        results["epochs"] = trainer.current_epoch
        results.update(extra or {})
        path.write_text(json.dumps(json_safe(results), indent=2, sort_keys=True, allow_nan=False))
        self.written.add(path)

    def on_fit_end(self, trainer, pl_module):
        self._write(trainer, pl_module, "fit")

    def on_test_end(self, trainer, pl_module):
        self._write(trainer, pl_module, "test")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """A stop by a signal or by the collapse guard: record it (``take_stop``), write ``results.json``."""
        sig = stop_signal(exception)
        stage = trainer.state.fn.value if trainer.state.fn is not None else "fit"
        if sig is not None:
            stop = RunStop(sig, stage, trainer.current_epoch + 1, trainer.max_epochs, trainer.global_step,
                           self.run_dir, last_checkpoint(trainer, self.run_dir), trainer.is_global_zero)
            _stops.append(stop)
            kept = str(stop.checkpoint) if stop.checkpoint else None
            self._write(trainer, pl_module, stage, {"stopped": True, "stopped/signal": sig.name,
                                                    "stopped/epoch": stop.epoch, "stopped/step": stop.step,
                                                    "stopped/checkpoint": kept})
        elif isinstance(exception, TrainingCollapsed):
            self._write(trainer, pl_module, stage, {"collapsed": True})


def non_finite_tensors(module: torch.nn.Module) -> list[str]:
    """Names of parameters and buffers holding a NaN or an infinity (BatchNorm statistics included)."""
    named = list(module.named_parameters()) + list(module.named_buffers())
    return [name for name, t in named if t.is_floating_point() and not torch.isfinite(t).all()]


class CheckpointGuard(Callback):
    """Keeps checkpoints trustworthy. A checkpoint is written only when every parameter and buffer is
    finite: otherwise the run stops naming them and the last finite checkpoint stays as it was. Each
    checkpoint records the method that wrote it (``checkpoint["sfda"]["method"]``), so ``--ckpt_path``
    of another method is refused, and the network it was made for (``["network"]``: architecture, class
    names and input spec of the source; named when a checkpoint does not fit, and a checkpoint of a source
    with other class names or another input spec is refused even when its tensors fit). ``sfda test`` /
    ``validate`` / ``predict`` and a resumed ``fit`` refuse non-finite weights."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if bad := non_finite_tensors(pl_module):
            raise FloatingPointError(
                f"{type(pl_module).__name__}: non-finite weights in epoch {trainer.current_epoch + 1}/"
                f"{trainer.max_epochs}, step {trainer.global_step} in {bad[:5]}"
                f"{f' and {len(bad) - 5} more' if len(bad) > 5 else ''} "
                "(expected finite values); no checkpoint written, the last finite one is kept. "
                "Lower model.optim.lr or check the input data.")
        checkpoint["sfda"] = {"method": checkpoint_method(pl_module), "network": network_record(pl_module)}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """Drop the checkpoint callbacks' saved state: its paths (``best_model_path``, ...) come from a
        file and Lightning would delete what they name; a resumed run keeps checkpoints in its own
        new folder anyway. Runs before the callbacks' states are loaded."""
        states = checkpoint.get("callbacks") or {}
        for key in [k for k in states if str(k).startswith("ModelCheckpoint")]:
            del states[key]

    def _check_loaded(self, trainer, pl_module) -> None:
        if bad := non_finite_tensors(pl_module):
            raise FloatingPointError(f"{trainer.ckpt_path or 'the model'}: non-finite weights in {bad[:5]} "
                                     "(expected finite values); refusing to train, evaluate or predict "
                                     "with them")

    def on_fit_start(self, trainer, pl_module):
        if trainer.ckpt_path:  # a resumed run, its weights restored by now
            self._check_loaded(trainer, pl_module)

    def on_test_start(self, trainer, pl_module):
        self._check_loaded(trainer, pl_module)

    def on_validation_start(self, trainer, pl_module):
        if trainer.state.fn != "fit":
            self._check_loaded(trainer, pl_module)

    def on_predict_start(self, trainer, pl_module):
        self._check_loaded(trainer, pl_module)


class CollapseGuard(Callback):
    """Stops a run whose predicted class marginal collapsed, without any target label.

    At every validation of ``fit`` the entropy of the mean prediction over the evaluation pass
    (``label_free/marginal_entropy``; segmentation: the pixel class marginal over the evaluation volumes)
    is compared with the source model's, measured before the first step (``source_only/marginal_entropy``).
    Below ``fraction`` of it, the run stops as for a NaN (``TrainingCollapsed``, exit status 1) before that
    validation's checkpoint is written, so ``last.ckpt`` stays the last healthy one; the message and
    ``results.json`` (``collapsed/*``) give the epoch, both entropies and the threshold. A module without a
    class marginal (detection, pose, source training) or whose source model was not measured
    (``evaluate_source: false``) is not guarded, and the run says so. Added to every ``sfda fit`` unless
    ``collapse_guard: false``.

    Args:
        fraction: stop below this fraction of the source model's marginal entropy (``COLLAPSE_FRACTION``).
    """

    def __init__(self, fraction: float = COLLAPSE_FRACTION):
        if not 0 < fraction < 1:
            raise ValueError(f"CollapseGuard.fraction: expected a fraction in (0, 1), got {fraction}")
        self.fraction = fraction
        self.source_key: str | None = None
        self.run_dir: Path | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.run_dir = own_run_dir(trainer)  # a collective: every rank asks, here rather than when stopping
        reason = unguarded_reason(pl_module)
        self.source_key = None if reason else pl_module.source_marginal_key
        if reason and trainer.is_global_zero:
            print(f"collapse guard: not applied to {type(pl_module).__name__} ({reason})", flush=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.source_key is None or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        source = pl_module.results.get(self.source_key)
        now = trainer.callback_metrics.get(PREFIX + MARGINAL_ENTROPY)
        if source is None or now is None or float(now) >= self.fraction * source:
            return
        epoch = trainer.current_epoch + 1
        threshold = self.fraction * source
        pl_module.results.update({"collapsed/epoch": epoch, "collapsed/marginal_entropy": float(now),
                                  "collapsed/source_marginal_entropy": source,
                                  "collapsed/threshold": threshold})
        kept = last_checkpoint(trainer, self.run_dir)
        raise TrainingCollapsed(
            f"{type(pl_module).__name__}: the predicted class marginal collapsed at epoch {epoch}/"
            f"{trainer.max_epochs}: its entropy (label_free/marginal_entropy) is {float(now):.4f} nats, "
            f"below {self.fraction} x the source model's {source:.4f} = {threshold:.4f} (expected at least "
            "that; 0 means one class for every sample). The run stopped; "
            + (f"the last healthy checkpoint is kept: {kept}. " if kept else
               "no checkpoint was written before it. ")
            + "Lower model.optim.lr, or set collapse_guard: false (--collapse_guard=false) if the target "
            "legitimately holds very few of the source's classes")


def unguarded_reason(pl_module: L.LightningModule) -> str | None:
    """Why the collapse guard cannot watch ``pl_module``; None when it can."""
    if getattr(pl_module, "source_marginal_key", None) is None:
        return ("its task has no class marginal to watch: classification and segmentation adaptation are "
                "guarded")
    if not getattr(pl_module, "evaluate_source", False):
        return "model.evaluate_source is false, so the source model's class marginal was not measured"
    return None


class RunConfigSaver(SaveConfigCallback):
    """Lightning CLI's ``config.yaml`` writer, into the run's own folder only (never the shared root)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if own_run_dir(trainer) is not None:
            super().setup(trainer, pl_module, stage)


class StepSeeder(Callback):
    """Reseeds python, numpy and torch before every training step from (run seed, global step,
    rank), so dropout and other in-step randomness do not depend on what drew random numbers
    before (Lightning's loop restart does): a resumed run draws the same numbers as an
    uninterrupted one. Augmentations are seeded per sample by the sampler instead."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch,
                             batch_idx: int) -> None:
        seed = (int(os.environ.get("PL_GLOBAL_SEED", 0)) * 1000003 + trainer.global_step * 1009
                + trainer.global_rank) % 2**31
        seed_generators(seed)


def seed_generators(seed: int) -> None:
    """Seed python, numpy, torch's CPU generator and, once CUDA is in use, every CUDA generator.

    What ``torch.manual_seed`` does, without its cost before CUDA starts: there it queues a lazy CUDA
    seeding call that records the Python stack, about 3 ms a step inside Lightning's deep stack."""
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)


class PredictionCSV(BasePredictionWriter):
    """``sfda predict`` output: ``predictions.csv`` with index, predicted class id and name, confidence.
    A sample the method rejects has class id ``num_classes`` and the name ``unknown``. The
    classification task's writer."""

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


class StopAfterEpochs(Callback):
    """Stop cleanly after ``epochs`` training epochs without changing the schedule (which
    depends on ``max_epochs``): for time-sliced or preemptible machines; resume with ``--ckpt_path``.

    Args:
        epochs: number of epochs to run in this session.
    """

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


class ChannelsLast(Callback):
    """Keep 4-D (5-D) weights and input image batches in channels-last (-3d) memory order.

    The same arithmetic, laid out so convolutions and pooling run faster (oneDNN on CPU, tensor cores
    on GPU): about 25-40% more training images/s for the digit CNNs on this repository's CPU, and
    max pooling about 6x faster. The engine's target passes convert their batches too
    (``pl_module.channels_last``, read by ``TaskModule.target_pass``). A network without 4-D or 5-D weights
    (an MLP) is left alone: the conversion would change nothing. Added to every run by the ``sfda``
    command unless the recipe sets ``channels_last: false``.
    """

    FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}

    def __init__(self):
        self.active = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        with torch.no_grad():
            for tensor in list(pl_module.parameters()) + list(pl_module.buffers()):
                if tensor.dim() in self.FORMATS:
                    tensor.data = restrided(tensor.data, self.FORMATS[tensor.dim()])
                    self.active = True
        pl_module.channels_last = self.active

    @classmethod
    def convert(cls, batch) -> None:
        """Put ``batch["image"]`` (a dict batch's 4-D or 5-D image tensor) in channels-last order."""
        image = batch.get("image") if isinstance(batch, dict) else None
        if isinstance(image, torch.Tensor) and image.dim() in cls.FORMATS:
            batch["image"] = image.contiguous(memory_format=cls.FORMATS[image.dim()])

    def _convert(self, batch) -> None:
        if self.active:
            self.convert(batch)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._convert(batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._convert(batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._convert(batch)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._convert(batch)


class FoldBatchNorm(Callback):
    """Run evaluation (validate, test, predict) and the engine's full target passes on a copy of the
    network with eval-mode BatchNorm folded into the convolution before it (``sfda.models.
    batchnorm_folding``): the same predictions up to float rounding, with about 9% faster eval-mode
    forwards for the SVHN digit CNN on this repository's CPU. Applies to classification modules (those
    with ``start_folded_inference``); the copy is rebuilt at every evaluation and engine pass and
    dropped before any training step. Added to every run by the ``sfda`` command unless the recipe sets
    ``fold_batchnorm: false``."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.fold_batchnorm = hasattr(pl_module, "start_folded_inference")

    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if getattr(pl_module, "fold_batchnorm", False):
            pl_module.start_folded_inference()

    def _stop(self, trainer: L.Trainer, pl_module: L.LightningModule, *_) -> None:
        if hasattr(pl_module, "stop_folded_inference"):
            pl_module.stop_folded_inference()

    on_validation_epoch_start = on_test_epoch_start = on_predict_epoch_start = _start
    on_validation_epoch_end = on_test_epoch_end = on_predict_epoch_end = _stop
    on_train_batch_start = on_exception = _stop  # weights are about to change, or the run failed


def restrided(tensor: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """``tensor`` copied into ``layout``'s strides even where ``contiguous(memory_format=...)`` would keep
    it as it is: a weight with one input channel (20, 1, 5, 5) counts as channels-last already, keeps
    NCHW strides, and convolutions then pick NCHW for their output (the first layer of every
    one-channel network, with NCHW max pooling after it: 5 times slower)."""
    return torch.empty_like(tensor, memory_format=layout).copy_(tensor)
