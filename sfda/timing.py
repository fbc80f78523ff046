"""Old home of ``Stopwatch``, now ``sfda.run.timing``."""

# temporary: sfda.methods still imports these; removed when the task layer lands
from .run.timing import Stopwatch

__all__ = ["Stopwatch"]
