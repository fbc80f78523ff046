"""Old home of ``track``, now ``sfda.run.progress``."""

# temporary: sfda.methods still imports these; removed when the task layer lands
from .run.progress import track

__all__ = ["track"]
