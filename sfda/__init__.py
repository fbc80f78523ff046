"""sfda: source-free domain adaptation on PyTorch Lightning."""

from .quiet import silence_library_noise

__version__ = "0.1.0"
silence_library_noise()
