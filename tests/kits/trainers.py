"""The quiet CPU Lightning trainer the task kits' in-process tests run on."""

import lightning as L
from lightning.pytorch.loggers import CSVLogger


def quiet_trainer(tmp_path, **kwargs) -> L.Trainer:
    """A CPU trainer logging to ``tmp_path``: no progress bar, summary, checkpoints or sanity validation
    (``kwargs`` override any setting; the caller sets the epochs or steps)."""
    settings = {"enable_checkpointing": False, "num_sanity_val_steps": 0, "enable_progress_bar": False,
                "enable_model_summary": False, "accelerator": "cpu"}
    return L.Trainer(logger=CSVLogger(tmp_path), **{**settings, **kwargs})
