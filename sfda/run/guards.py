"""Guards of a run: non-finite weights never reach a checkpoint, a collapsed class marginal stops the run."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from .checks import TrainingCollapsed, checkpoint_method, network_record
from .folder import last_checkpoint, own_run_dir
from .keys import LABEL_FREE, MARGINAL_ENTROPY

# the collapse guard stops a run when the entropy of its predicted class marginal falls below this fraction
# of the source model's: one class predicted gives 0; a target that legitimately holds only k of the
# source's C classes gives about log k / log C of it (2 of 10: 0.30, 6 of 12: 0.72), above the fraction
COLLAPSE_FRACTION = 0.2


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
        now = trainer.callback_metrics.get(LABEL_FREE + MARGINAL_ENTROPY)
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
