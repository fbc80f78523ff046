"""Library noise is silenced by its exact text, and nothing else is."""

import logging
import warnings

from sfda.run.quiet import silence_library_noise


def test_lightning_tips_are_dropped_and_other_messages_kept(caplog):
    silence_library_noise()
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO):
        log.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
        log.info("💡 Tip: For seamless cloud uploads and versioning, try installing [litmodels]")
        log.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]


def test_the_two_deprecations_are_silenced_and_other_warnings_kept():
    silence_library_noise()
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use `treespec.is_leaf()`",
            FutureWarning,
            stacklevel=1,
        )
        warnings.warn(
            "The `always_return_as_numpy` argument of `get_mask_edges` has been deprecated",
            FutureWarning,
            stacklevel=1,
        )
        warnings.warn("`isinstance(x, LeafSpec)` is a different message", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["`isinstance(x, LeafSpec)` is a different message"]
