"""A sweep's search space: YAML over recipe keys, checked against the resolved recipe.

    model.init_args.optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    model.init_args.beta: {type: float, low: 0.1, high: 0.5}
    data.init_args.batch_size: {type: int, low: 32, high: 128, step: 32}
    model.init_args.optim.name: {type: categorical, choices: [sgd, adam]}

A key is a dotted path of the recipe as ``sfda fit --print_config`` resolves it (so defaults the
recipe does not write can be searched too); a key that is not there is refused by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KINDS = ("float", "int", "categorical")
SCALARS = (type(None), bool, int, float, str)  # what a categorical choice may be (Optuna's own rule)


class SpaceError(ValueError):
    """A search-space file or entry that cannot be searched; the message names file and key."""


@dataclass(frozen=True)
class Dimension:
    """One searched recipe key: ``float`` / ``int`` over ``[low, high]`` (``log`` scale, ``step``), or
    ``categorical`` over ``choices``."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple | None = None

    def suggest(self, trial) -> Any:
        """The value an Optuna trial proposes for this key."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)


def parse_choices(where: str, key: str, entry: dict) -> tuple:
    """A categorical's choices: single values of one type (``null`` beside them allowed), each once."""
    choices = entry.get("choices")
    if not isinstance(choices, list) or not choices:
        raise SpaceError(f"{where}: {key}: a categorical dimension needs a non-empty list 'choices'")
    nested = [c for c in choices if not isinstance(c, SCALARS)]
    if nested:
        raise SpaceError(
            f"{where}: {key}: choice {nested[0]!r} is not a single value; expected null, true/false, "
            "numbers or text"
        )
    if len({type(c) for c in choices if c is not None}) > 1:
        described = ", ".join(f"{c!r} ({type(c).__name__})" for c in choices)
        raise SpaceError(
            f"{where}: {key}: the choices mix types: {described}; expected every choice of one type "
            "(e.g. 16, 32, 64 or 0.5, 1.0; null may stand beside them)"
        )
    repeated = sorted({repr(c) for c in choices if choices.count(c) > 1})
    if repeated:
        raise SpaceError(
            f"{where}: {key}: the choices repeat {', '.join(repeated)}; expected each value once"
        )
    return tuple(choices)


def parse_number(where: str, key: str, kind: str, entry: dict, field: str) -> float:
    """``entry[field]`` as a finite number (an integer for an ``int`` dimension)."""
    value = entry.get(field)
    try:
        if isinstance(value, bool):
            raise TypeError("a boolean")
        number = float(value)
    except (TypeError, ValueError):
        raise SpaceError(
            f"{where}: {key}: a {kind} dimension needs a number '{field}', got {value!r}"
        ) from None
    if not math.isfinite(number):
        raise SpaceError(f"{where}: {key}: expected a finite '{field}', got {value!r}")
    if kind == "int" and number != int(number):
        raise SpaceError(f"{where}: {key}: an int dimension needs a whole number '{field}', got {value!r}")
    return number


def parse_dimension(where: str, key: str, entry) -> Dimension:
    if not isinstance(entry, dict) or entry.get("type") not in KINDS:
        raise SpaceError(f"{where}: {key}: expected {{type: float|int|categorical, ...}}, got {entry!r}")
    kind = entry["type"]
    unknown = set(entry) - {"type", "low", "high", "log", "step", "choices"}
    if unknown:
        raise SpaceError(
            f"{where}: {key}: unknown fields {sorted(unknown)}; expected low, high, log, step or choices"
        )
    if kind == "categorical":
        return Dimension(key, kind, choices=parse_choices(where, key, entry))
    low = parse_number(where, key, kind, entry, "low")
    high = parse_number(where, key, kind, entry, "high")
    if low > high:
        raise SpaceError(f"{where}: {key}: expected finite low <= high, got low={low}, high={high}")
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(f"{where}: {key}: 'log' must be true or false, got {log!r}")
    if log and low <= 0:
        raise SpaceError(
            f"{where}: {key}: a log range needs low > 0, got low={entry['low']} (low and high are the "
            "values themselves, not powers of ten: e.g. low: 1.0e-5, high: 1.0e-1)"
        )
    if "step" not in entry or entry["step"] is None:
        return Dimension(key, kind, low, high, log)
    if log:
        raise SpaceError(f"{where}: {key}: 'step' and 'log' cannot be combined")
    step = parse_number(where, key, kind, entry, "step")
    if step <= 0:
        raise SpaceError(f"{where}: {key}: expected a 'step' above 0, got {entry['step']!r}")
    return Dimension(key, kind, low, high, log, step)


def recipe_value(config: dict, key: str):
    """The value of dotted ``key`` in ``config`` (which has it)."""
    for part in key.split("."):
        config = config[part]
    return config


def check_sign(where: str, dimension: Dimension, value) -> None:
    """Refuse a numeric range that holds no positive value for a key the recipe sets positive: most
    often exponents (-5 and -1 for 1e-5 and 1e-1), and every trial would be refused or meaningless."""
    if dimension.kind == "categorical" or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if value > 0 and dimension.high <= 0:
        low, high = dimension.low, dimension.high
        raise SpaceError(
            f"{where}: {dimension.key}: the recipe's value is {value}, but the range low={low:g}, "
            f"high={high:g} holds no value above 0; expected the values themselves: if {low:g} and "
            f"{high:g} are powers of ten, write low: {10 ** low:.1e}, high: {10 ** high:.1e}, log: true"
        )


def check_kind(where: str, dimension: Dimension, value) -> None:
    """Refuse true/false searched for a key the recipe sets to a number, and numbers (a range or numeric
    choices) for a key the recipe sets to true/false: every trial would be refused by the recipe's type."""
    if value is None or not isinstance(value, (bool, int, float)):
        return  # null (the type is not known here) or text: the trial's run checks it
    wanted = "true/false" if isinstance(value, bool) else "numbers"
    offered = [c for c in (dimension.choices or ()) if c is not None]
    if dimension.kind != "categorical":
        wrong = isinstance(value, bool)
    else:
        wrong = any(isinstance(c, bool) != isinstance(value, bool) for c in offered)
    if wrong:
        what = f"choices {list(dimension.choices)}" if dimension.kind == "categorical" else (
            f"a {dimension.kind} range"
        )
        raise SpaceError(
            f"{where}: {dimension.key}: the recipe's value is {value!r}, so the key takes {wanted}, but the "
            f"space searches {what}; expected {wanted} of the key's type"
        )


def missing_part(config: dict, key: str) -> str | None:
    """None when dotted ``key`` is in ``config``; else why not (for the error message)."""
    node, path = config, []
    for part in key.split("."):
        if node is None and path:
            return (
                f"{'.'.join(path)} is null in the recipe (the method's built-in default); write that block "
                "out in the recipe to search inside it"
            )
        if not isinstance(node, dict) or part not in node:
            return "expected a dotted path such as model.init_args.optim.lr"
        node, path = node[part], [*path, part]
    return None


def load_space(path: Path, resolved_recipe: dict) -> list[Dimension]:
    """The dimensions of ``path``, each key checked to exist in ``resolved_recipe``.

    Raises:
        SpaceError: unreadable YAML, a malformed entry (a log range with a non-positive bound, choices
            of mixed types...), a key the recipe does not have, or a range with no positive value for a
            key the recipe sets positive (exponents written for values).
    """
    try:
        content = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise SpaceError(f"--space {path}: not a readable YAML file ({err})") from err
    if not isinstance(content, dict) or not content:
        raise SpaceError(f"--space {path}: expected a mapping of recipe keys to dimensions, got {content!r}")
    dimensions = [parse_dimension(str(path), str(key), entry) for key, entry in content.items()]
    for dimension in dimensions:
        why = missing_part(resolved_recipe, dimension.key)
        if why is not None:
            raise SpaceError(
                f"{path}: {dimension.key}: not a key of the recipe (as `sfda fit --print_config` "
                f"resolves it); {why}"
            )
        check_kind(str(path), dimension, recipe_value(resolved_recipe, dimension.key))
        check_sign(str(path), dimension, recipe_value(resolved_recipe, dimension.key))
    return dimensions


def set_key(config: dict, key: str, value) -> None:
    """Set dotted ``key`` in nested ``config`` (creating mappings on the way)."""
    *parents, last = key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
