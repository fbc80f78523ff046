"""Checks of datamodule arguments shared by every task: refuse a value that cannot work, by its field."""

from __future__ import annotations

import math


def check_counts(minimum: int, **values: int | None) -> None:
    """Raise ``ValueError`` naming ``data.<field>`` for any given value below ``minimum`` (None = not set)."""
    for name, value in values.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < minimum):
            raise ValueError(f"data.{name}: expected an integer >= {minimum}, got {value!r}")


def json_type(value: object) -> str:
    """The JSON name of ``value``'s type: number, string, boolean, null, list or object."""
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def json_number(value: object, where: str) -> float:
    """A finite JSON number (not a bool, a string or NaN/inf), or ``ValueError`` naming ``where`` and the
    value found."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: expected a number, got {value!r} (a {json_type(value)})")
    if not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def json_section(payload: object, key: str, where: str, expected: str) -> list:
    """``payload[key]`` as a list, or ``ValueError`` naming the file, the key and what it should hold."""
    if not isinstance(payload, dict):
        raise ValueError(
            f"{where}: expected a JSON object with '{key}' ({expected}), got a {json_type(payload)}"
        )
    if key not in payload:
        raise ValueError(f"{where}: field '{key}' is missing; expected {expected}")
    if not isinstance(payload[key], list):
        found = json_type(payload[key])
        raise ValueError(f"{where}: field '{key}' must be a list ({expected}), got a {found}")
    return payload[key]


def first_duplicate(values: list) -> tuple[int, int] | None:
    """``(first, second)`` positions of the first value that occurs twice in ``values``, or None."""
    seen: dict = {}
    for position, value in enumerate(values):
        key = (type(value).__name__, value)
        if key in seen:
            return seen[key], position
        seen[key] = position
    return None
