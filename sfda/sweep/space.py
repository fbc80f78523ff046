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
        choices = entry.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{where}: {key}: a categorical dimension needs a non-empty list 'choices'")
        return Dimension(key, kind, choices=tuple(choices))
    try:
        low, high = float(entry["low"]), float(entry["high"])
    except (KeyError, TypeError, ValueError) as err:
        raise SpaceError(
            f"{where}: {key}: a {kind} dimension needs numeric 'low' and 'high' ({err})"
        ) from err
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise SpaceError(f"{where}: {key}: expected finite low <= high, got low={low}, high={high}")
    log = bool(entry.get("log", False))
    if log and low <= 0:
        raise SpaceError(f"{where}: {key}: a log range needs low > 0, got low={entry['low']}")
    step = entry.get("step")
    if step is not None and log:
        raise SpaceError(f"{where}: {key}: 'step' and 'log' cannot be combined")
    return Dimension(key, kind, low, high, log, None if step is None else float(step))


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
        SpaceError: unreadable YAML, a malformed entry, a log range with a non-positive bound, or a
            key the recipe does not have.
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
    return dimensions


def set_key(config: dict, key: str, value) -> None:
    """Set dotted ``key`` in nested ``config`` (creating mappings on the way)."""
    *parents, last = key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
