"""sfda: source-free domain adaptation on PyTorch Lightning."""

from .run.quiet import silence_library_noise
from .run.version import __version__

__all__ = ["__version__"]
silence_library_noise()
