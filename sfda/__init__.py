"""sfda: source-free domain adaptation on PyTorch Lightning."""

__version__ = "0.1.0"
