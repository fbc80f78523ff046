"""Old home of the run callbacks, now in ``sfda.run`` and ``sfda.classification_writer``."""

# temporary: sfda.methods still imports these; removed when the task layer lands
from .classification_writer import PredictionCSV
from .run.folder import own_run_dir
from .run.speed import ChannelsLast

__all__ = ["ChannelsLast", "PredictionCSV", "own_run_dir"]
