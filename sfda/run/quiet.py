"""Library messages that tell an sfda user nothing, silenced by their exact text (nothing else is).

- Lightning's two advertising tips (litlogger, litmodels), printed by every run;
- torch's deprecation of ``isinstance(treespec, LeafSpec)``, raised from inside Lightning's own code;
- MONAI's deprecation of ``always_return_as_numpy``, raised from inside MONAI's own metrics.
"""

from __future__ import annotations

import logging
import warnings

TIPS = (
    "💡 Tip: For seamless cloud logging and experiment tracking",
    "💡 Tip: For seamless cloud uploads and versioning",
)
WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r".*`always_return_as_numpy`")
TIP_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class DropTips(logging.Filter):
    """Drops log records that begin with one of ``TIPS``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(TIPS)


def silence_library_noise() -> None:
    """Install the filters (idempotent)."""
    for pattern in WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in TIP_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropTips) for f in logger.filters):
            logger.addFilter(DropTips())
