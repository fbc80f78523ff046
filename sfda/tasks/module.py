"""The LightningModule every sfda method and source training is: it HOLDS a task (``self.task``, a
``sfda.tasks.base.Task``) and runs what is the same whatever the task.

It records the constructor's arguments as plain data (``hparams.yaml`` and every checkpoint), holds the
optimiser settings, the ``results`` entries for ``results.json`` and the phase ``stopwatch``, builds the
optimiser and schedule over ``parameter_groups``, refuses a non-finite loss, runs the engine's target
pass (``target_pass``), and evaluates through the task's one interface: each validation or test batch
gives per-sample rows (``Task.evaluation_rows``), the epoch's end gathers them over processes and logs
``Task.score_rows``. Predictions and their writers come from the task too.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager, nullcontext

import lightning as L
import torch
from torch.nn.parallel import DistributedDataParallel

from ..models.batchnorm_folding import folded_copy
from ..pseudo_labels.distributed import average_gradients, every_process_agrees
from ..pseudo_labels.passes import RowCollector, Rows, collect_rows, loader_length
from ..run.checks import check_state_keys, check_state_shapes
from ..run.progress import track
from ..run.speed import ChannelsLast
from ..run.timing import Stopwatch
from .base import Task
from .hparams import record_hyperparameters
from .optim import Optim, build_optimizer, check_finite


def state_versions(network: torch.nn.Module) -> tuple | None:
    """``(id, version counter)`` of every parameter and buffer: any in-place write (an optimiser step, a
    BatchNorm statistic, an EMA copy, a loaded state) or a replaced tensor changes it. None where a tensor
    keeps no counter (one made under ``torch.inference_mode``): unknown, never equal."""
    tensors = list(network.state_dict(keep_vars=True).values())
    if any(t.is_inference() for t in tensors):
        return None
    return tuple((id(t), t._version) for t in tensors)


class TaskModule(L.LightningModule):
    """Base of every sfda LightningModule. Subclasses set ``task`` (a Task) and ``network`` in ``__init__``
    (or ``configure_model`` for source training) and may override ``evaluated_network`` (the network that
    is scored and predicts: Mean Teacher's teacher, pose SFDA's intermediate network) and
    ``paired_network`` (the network the evaluated one is paired with by an EMA, for the label-free
    ``teacher_agreement``).

    Class attributes:
        tasks: the tasks the class works on (a method refuses the others by name).
        eval_prefix: the prefix of the scores with labels ("target"; source training: "source_val").
        paired_name: validation also scores ``paired_network`` as ``<eval_prefix>_<paired_name>/...``
            (Mean Teacher: "student"); None: only the evaluated network.
    """

    tasks: tuple[str, ...] = ()
    eval_prefix = "target"
    paired_name: str | None = None
    task: Task
    network: torch.nn.Module

    def __init__(self, optim: Optim | None = None):
        super().__init__()
        record_hyperparameters(self)  # the method's arguments, in every checkpoint and hparams.yaml
        self._optim = optim
        self.results: dict[str, float] = {}  # extra entries for results.json
        self.stopwatch = Stopwatch()  # phase timings, reported as timing/<phase>_s
        self.eval_rows = RowCollector()  # this evaluation epoch's rows, gathered and scored at its end
        self.paired_rows = RowCollector()  # the same of the paired network (validation, ``paired_name``)

    @property
    def optim(self) -> Optim:
        """The optimiser settings: the recipe's, else the task's default."""
        if self._optim is not None:
            return self._optim
        return self.task.default_optim if hasattr(self, "task") else Optim()

    @property
    def class_names(self) -> list[str]:
        """The task's class names (pose: joint names), in the network's output order."""
        return self.task.names

    @property
    def num_classes(self) -> int:
        return self.task.num_classes

    # the networks ------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, index: torch.Tensor | None = None):
        """The task's training-time output of ``network`` (see ``Task.forward``)."""
        return self.task.forward(self, images, index)

    def evaluated_network(self) -> torch.nn.Module:
        """The network that is evaluated and predicts (default ``network``)."""
        return self.network

    def paired_network(self) -> torch.nn.Module | None:
        """The network paired with the evaluated one by an EMA (its student or its teacher); None: none."""
        return None

    # BatchNorm folded into the convolutions for eval-mode passes (tasks that allow it) -----------------
    def start_folded_inference(self) -> None:
        """Until ``stop_folded_inference``, the task's eval-mode forwards of ``network`` run on a copy with
        BatchNorm folded into the convolutions (``sfda.models.batchnorm_folding``: the same outputs up to
        float rounding, faster), where the run asked for it (``fold_batchnorm``, set by the
        ``FoldBatchNorm`` callback) and the task folds (classification). The copy is never trained, saved
        or loaded."""
        wanted = getattr(self, "fold_batchnorm", False) and getattr(self.task, "folds_batchnorm", False)
        self.__dict__["_folded"] = folded_copy(self.network) if wanted else None

    def stop_folded_inference(self) -> None:
        self.__dict__["_folded"] = None

    def folded_network(self) -> torch.nn.Module | None:
        """The folded copy in use (None: none)."""
        return self.__dict__.get("_folded")

    @contextmanager
    def folded_inference(self):
        """``start_folded_inference`` for the block (a fresh copy of the weights as they are now); the copy
        in use before, if any, afterwards."""
        previous = self.__dict__.get("_folded")
        self.start_folded_inference()
        try:
            yield
        finally:
            self.__dict__["_folded"] = previous

    # checkpoints --------------------------------------------------------------------------------------
    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse a checkpoint made for another network by the recipe fields that differ, before
        Lightning's strict load prints its key list (adaptation extends this)."""
        check_state_shapes(self, checkpoint, self.trainer.ckpt_path)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module``'s; the strict load of ``--ckpt_path`` refuses missing or unknown tensors by the
        recipe fields that differ (``check_state_keys``), not with torch's key list."""
        if strict and self._trainer is not None and self.trainer.ckpt_path:
            check_state_keys(self, state_dict, self.trainer.ckpt_path)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # optimisation -------------------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict]:
        """Optimiser groups; the task's split of ``network`` by default, methods choose what trains."""
        return self.task.parameter_groups(self.network, self.optim)

    def optimizer_specs(self) -> list[tuple[list[dict], Optim]]:
        """One ``(parameter groups, settings)`` per optimiser. Default: one optimiser over
        ``parameter_groups`` with ``optim``; a method with several networks trained apart (pose SFDA's
        source, intermediate and target networks) returns one entry each and uses manual optimisation."""
        return [(self.parameter_groups(), self.optim)]

    def configure_optimizers(self):
        built = [build_optimizer(self, groups, settings) for groups, settings in self.optimizer_specs()]
        return built[0] if len(built) == 1 else built

    def manual_step(self, optimizer, loss: torch.Tensor) -> None:
        """One manual-optimisation update of ``optimizer``'s parameters on ``loss``. Under DDP the gradients
        are averaged here, for this optimiser's parameters only: DDP's reducer serves one backward per
        forward, and a method with several updates per step (pose SFDA) or an update on a memory bank every
        few steps (RoTTA) does not fit it."""
        optimizer.zero_grad()
        model = self.trainer.model
        with model.no_sync() if isinstance(model, DistributedDataParallel) else nullcontext():
            self.manual_backward(loss)
        average_gradients([p for group in optimizer.param_groups for p in group["params"]])
        optimizer.step()

    def on_before_backward(self, loss: torch.Tensor) -> None:
        check_finite(self, loss)

    # the engine's target pass ---------------------------------------------------------------------------
    @torch.no_grad()
    def target_pass(self, loader, per_batch: Callable[[dict], Rows], description: str = "engine pass",
                    phase: str = "engine") -> Rows:
        """``collect_rows`` over ``loader`` with the network in eval mode (see ``sfda.pseudo_labels.passes``):
        ``{"index": (N,), name: (N, ...) or [N tensors]}``, identical on every process; the time is counted
        as ``timing/<phase>_s``."""
        was_training = self.network.training
        self.network.eval()
        shown = track(loader, description, enabled=self.trainer.is_global_zero)
        batches = (self.batch_on_device(batch) for batch in shown)
        try:
            with self.stopwatch(phase), self.trainer.precision_plugin.forward_context():
                return collect_rows(batches, per_batch, expected_batches=loader_length(loader))
        finally:
            self.network.train(was_training)

    def batch_on_device(self, batch: dict) -> dict:
        """``batch`` on the module's device, images in channels-last order when the run uses it (as
        Lightning's own loops get them from ``ChannelsLast``)."""
        moved = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        if getattr(self, "channels_last", False):
            ChannelsLast.convert(moved)
        return moved

    def first_evaluation_items(self, count: int) -> dict:
        """The first ``count`` items of the evaluation loader's first batch, on this device (what the
        report's overlays draw)."""
        first = next(iter(self.trainer.datamodule.val_dataloader()))
        return {k: v[:count] for k, v in self.transfer_batch_to_device(first, self.device, 0).items()}

    # evaluation: the task's one interface -------------------------------------------------------------
    def evaluate_loader(self, loader, prefix: str, network: torch.nn.Module | None = None,
                        label_free: bool = True) -> tuple[dict[str, float], Rows]:
        """Scores of ``network`` (default: the evaluated one) over a loader in one engine pass, and the
        gathered rows."""
        network = network or self.evaluated_network()
        with self.folded_inference():
            rows = self.target_pass(loader, lambda b: self.task.evaluation_rows(self, b, network),
                                    f"evaluating {prefix}", phase="evaluation")
        return self.task.score_rows(self, rows, prefix, label_free), rows

    def evaluation_step(self, batch: dict, paired: bool = False) -> None:
        """The evaluated network's rows of ``batch`` and, with ``paired`` where the module names one
        (``paired_name``), the paired network's."""
        with self.stopwatch("evaluation"):
            if not self.eval_rows:  # this evaluation's first batch: reserve for all of its batches
                self.eval_rows = RowCollector(self.expected_evaluation_batches())
                self.paired_rows = RowCollector(self.eval_rows.expected_batches)
            rows = self.task.evaluation_rows(self, batch, self.evaluated_network())
            self.eval_rows.add(batch["index"], rows)
            if paired and self.paired_name and self.paired_network() is not None:
                paired_rows = self.task.evaluation_rows(self, batch, self.paired_network())
                self.paired_rows.add(batch["index"], paired_rows)

    def expected_evaluation_batches(self) -> int | None:
        """Batches of the running validation or test (Lightning's count), None where not finite."""
        counts = self.trainer.num_test_batches if self.trainer.testing else self.trainer.num_val_batches
        total = sum(counts) if counts else None
        return int(total) if total is not None and total != float("inf") else None

    def gathered_evaluation(self, name: str = "eval_rows") -> Rows:
        """This epoch's rows (the ``RowCollector`` attribute ``name``) of every process (a collective), one
        per sample; the collector is emptied."""
        rows = getattr(self, name).gather()
        setattr(self, name, RowCollector())
        return rows

    def log_scores(self, scores: dict[str, float]) -> None:
        """Log flat scores; per-item values (three or more path parts, e.g. ``target/dice/<volume>``) go to
        ``results`` instead of the loggers."""
        per_item = {k: v for k, v in scores.items() if k.count("/") > 1 and not k.startswith("label_free/")
                    and self.task.per_item_scores}
        self.results.update(per_item)
        self.log_dict({k: v for k, v in scores.items() if k not in per_item}, sync_dist=False)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.evaluation_step(batch, paired=True)

    def on_validation_epoch_end(self) -> None:
        rows = self.gathered_evaluation()
        self.log_scores(self.task.score_rows(self, rows, self.eval_prefix))
        self.remember_evaluation(rows)
        if self.paired_name and self.paired_network() is not None:
            prefix = f"{self.eval_prefix}_{self.paired_name}"
            scores = self.task.score_rows(self, self.gathered_evaluation("paired_rows"), prefix)
            self.log_scores({k: v for k, v in scores.items() if k.startswith(prefix + "/")})

    # the last validation, which the report's closing pass reuses --------------------------------------
    def remember_evaluation(self, rows: Rows) -> None:
        """Keep what the report takes of this validation's rows (``Task.kept_report_rows``) with the state of
        the network that made them (the module's own network only)."""
        kept = self.task.kept_report_rows(rows) if self.evaluated_network() is self.network else None
        self.__dict__["_last_evaluation"] = None if kept is None else (state_versions(self.network), kept)

    def unchanged_evaluation(self):
        """The kept rows of the last validation if no weight or buffer of the network has been written since
        (every process agrees: a collective), else None: the report's pass over the same split with the same
        network would give the same rows."""
        last = self.__dict__.get("_last_evaluation")
        same = last is not None and last[0] is not None and last[0] == state_versions(self.network)
        return last[1] if every_process_agrees(same, self.device) else None

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.evaluation_step(batch)

    def on_test_epoch_end(self) -> None:
        rows = self.gathered_evaluation()
        self.log_scores(self.task.score_rows(self, rows, self.eval_prefix))
        self.task.after_test(self, rows)

    # predictions --------------------------------------------------------------------------------------
    def source_network(self) -> torch.nn.Module | None:
        """The untouched source network whose predictions are drawn beside the adapted ones (None: none)."""
        return None

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return self.task.predict(self, batch, self.evaluated_network())

    def configure_callbacks(self) -> list:
        """The task's prediction writers (none for a module without a task)."""
        task = getattr(self, "task", None)
        return type(task).writers(self) if task is not None else []

    # logging ------------------------------------------------------------------------------------------
    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        """Takes the reference boxes a target training batch may carry for reporting (``report_boxes``,
        see ``sfda.data.detection``) OUT of the batch before ``training_step`` sees it: only
        ``reporting_references`` gives them, to diagnostics that never train."""
        self._batch_in_epoch = batch_idx
        hidden = batch.pop("report_boxes", None) if isinstance(batch, dict) else None
        self.__dict__["_report_boxes"] = hidden

    def reporting_references(self) -> list[torch.Tensor] | None:
        """The current training batch's reference boxes, per image ``(n, 4)`` in input pixels, for
        REPORTING ONLY (pseudo-label precision); never a loss. None where the batch carries none."""
        return self.__dict__.get("_report_boxes")

    def log(self, name: str, value, *args, **kwargs) -> None:
        """``LightningModule.log``, thinned inside ``training_step`` (see ``passes_step_log``)."""
        if args or self.passes_step_log(kwargs):
            super().log(name, value, *args, **kwargs)

    def passes_step_log(self, options: dict) -> bool:
        """Whether a ``log`` call with ``options`` goes through. In ``training_step`` a per-step value
        (``on_epoch`` not set) goes through only at the steps the loggers write (every
        ``trainer.log_every_n_steps``) and at each epoch's first and last step (the progress bar, the
        console's epoch line): what the loggers record is unchanged. Each ``log`` call costs about
        1.5 ms of Lightning's bookkeeping, and on a GPU the progress bar reading it is a device sync."""
        trainer = self._trainer
        if trainer is None or self._current_fx_name != "training_step" or options.get("on_epoch"):
            return True
        step = getattr(self, "_batch_in_epoch", 0)
        # the loggers' own test: it reads the same step counter in training_step as when they write
        writes = trainer._logger_connector.should_update_logs or bool(trainer.fast_dev_run)
        return writes or step == 0 or step + 1 >= trainer.num_training_batches
