"""Old home of the run checks, now ``sfda.run.checks``."""

# temporary: sfda.methods still imports these; removed when the task layer lands
from .run.checks import check_state_keys, check_state_shapes

__all__ = ["check_state_keys", "check_state_shapes"]
