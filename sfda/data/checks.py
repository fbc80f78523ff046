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


def json_id(value: object, where: str) -> int | str:
    """A JSON id: an integer or a string (as COCO files write them), not a boolean, a list or an object;
    else ``ValueError`` naming ``where`` and the value found."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{where} = {value!r} (a {json_type(value)}); expected an integer or string id")
    return value


def json_pixels(value: object, where: str) -> int:
    """A whole, non-negative number of pixels (``60`` or ``60.0``; not ``60.5``, ``"60"`` or a boolean)."""
    number = json_number(value, where)
    if number < 0 or not number.is_integer():
        raise ValueError(f"{where}: expected a whole number of pixels >= 0, got {value!r}")
    return int(number)


def class_name(value: object, where: str) -> str:
    """A class (or joint) name: a string that is not empty or only spaces."""
    if not isinstance(value, str):
        raise ValueError(f"{where} = {value!r} is a {json_type(value)}; expected a string (names are text)")
    if not value.strip():
        raise ValueError(
            f"{where} = {value!r} is empty; expected a name (an empty name tells no class or joint apart)"
        )
    return value


def check_interval(where: str, value: object, low: float, high: float, open_low: bool = False,
                   open_high: bool = False) -> float:
    """``value`` as a float when it is a number in the interval ``low``..``high`` (ends open or closed as
    told), else ``ValueError`` naming ``where`` and the interval, e.g. ``fog.beta: expected a value in
    (0, 10], got -1``."""
    interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    inside = number and (low < value if open_low else low <= value) and (
        value < high if open_high else value <= high)
    if not inside:
        raise ValueError(f"{where}: expected a value in {interval}, got {value!r}")
    return float(value)
