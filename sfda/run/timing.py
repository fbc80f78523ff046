"""Wall-clock accounting of named phases (engine passes, clustering, bank updates)."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager


class Stopwatch:
    """Accumulates seconds per phase name; nested uses of the same name count once.

    ``with watch("engine"): ...`` then ``watch.totals["engine"]``. On a GPU the timed code
    should end in a synchronising call (``.item()``, ``.cpu()``) for the numbers to mean
    device time; on CPU they are exact.
    """

    def __init__(self):
        self.totals: dict[str, float] = defaultdict(float)
        self._depth: dict[str, int] = defaultdict(int)

    @contextmanager
    def __call__(self, phase: str):
        self._depth[phase] += 1
        started = time.perf_counter()
        try:
            yield
        finally:
            self._depth[phase] -= 1
            if self._depth[phase] == 0:
                self.totals[phase] += time.perf_counter() - started
