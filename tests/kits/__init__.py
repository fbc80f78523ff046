"""Shared test helpers (importable as ``kits.<name>``: pytest puts tests/ on sys.path)."""
