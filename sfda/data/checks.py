"""Checks of datamodule arguments shared by every task: refuse a value that cannot work, by its field."""

from __future__ import annotations


def check_counts(minimum: int, **values: int | None) -> None:
    """Raise ``ValueError`` naming ``data.<field>`` for any given value below ``minimum`` (None = not set)."""
    for name, value in values.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < minimum):
            raise ValueError(f"data.{name}: expected an integer >= {minimum}, got {value!r}")
