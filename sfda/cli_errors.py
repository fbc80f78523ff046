"""A recipe or command-line mistake explained first, on its own line, with the closest valid key.

jsonargparse prints the whole usage (about 50 lines) and then a nested message; a user needs the
key that was wrong and what it should have been. ``explain`` turns the message into one line naming
the field and the closest accepted name ("did you mean 'beta'?"); the detail follows, the usage is
dropped (``sfda fit --help`` shows it).
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

from .recipe_files import recipe_holding
from .run.checks import closest

UNKNOWN_OPTION = re.compile(r"Option '([\w.]+)' is not accepted")
CLASS_PATH = re.compile(r"class_path '([\w.]+)'")
PARSER_KEY = re.compile(r'Parser key "([\w.]+)"')
CONFIG_PATH = re.compile(r"Parser key \"config\": (?:Path is not a file|File does not exist): '(.+?)'")
BARE_KEY = re.compile(r'^Parser key "([\w.]+)":\s*$')
GIVEN = re.compile(r"Given value: (.*)")
EXPECTED_TYPE = re.compile(r"Expected a <class '(\w+)'>")
ENV_HINT = "in a recipe an environment variable is ${oc.env:VAR} (or ${oc.env:VAR,default})"
UNKNOWN_KEY = re.compile(r"(?i)unrecognized arguments: (\S+)|Key \"([\w.]+)\" is not expected"
                         r"|does not accept option '([\w.]+)'")


def accepted_arguments(class_path: str) -> list[str]:
    """Constructor argument names of ``class_path`` (a class the user's recipe named), [] if unknown."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return []
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            names += [
                p for p in inspect.signature(klass.__init__).parameters if p not in ("self", "args", "kwargs")
            ]
    return list(dict.fromkeys(names))


def config_path_problem(given: str) -> str:
    """What a ``--config`` path that is not a file is: a folder (with the recipes inside), or nothing."""
    path = Path(given)
    if not path.is_dir():
        return f"--config: {given} does not exist; expected the path of a recipe .yaml file"
    recipes = sorted(path.glob("*.yaml"))
    hint = f", such as {', '.join(str(r) for r in recipes[:3])}" if recipes else f" ({given} holds none)"
    return f"--config: {given} is a folder; expected a recipe .yaml file{hint}"


def key_problem(key: str, message: str) -> str:
    """One line for jsonargparse's 'Parser key "k":' followed by indented detail: the key, the value
    given and the types expected (or the first detail line)."""
    details = [line.strip() for line in message.strip().splitlines()[1:] if line.strip()]
    given = GIVEN.search(message)
    expected = list(dict.fromkeys(t.replace("NoneType", "null") for t in EXPECTED_TYPE.findall(message)))
    if given and expected:
        line = f"{key}: got {given.group(1)}; expected {' or '.join(expected)}"
    else:
        line = f"{key}: {details[0] if details else 'not accepted'}"
    return f"{line}; {ENV_HINT}" if "${" in message or "Interpolation" in message else line


def in_recipe(key: str, line: str, recipes: list[Path]) -> str:
    """``line`` prefixed with the recipe file that writes ``key`` (None: the command line gave it)."""
    holder = recipe_holding(key, recipes)
    return line if holder is None else f"recipe {holder}: {line}"


def explain(message: str, known_keys: list[str], recipes: list[Path] = ()) -> str:
    """The first line of an argument error: the recipe file that holds the field (of ``recipes``, the
    ``--config`` files read), the field, what is wrong, the closest valid name."""
    config = CONFIG_PATH.search(message)
    if config:
        return config_path_problem(config.group(1))
    option, path, key = UNKNOWN_OPTION.search(message), CLASS_PATH.search(message), PARSER_KEY.search(message)
    if option and path:
        where = f"{key.group(1)}.init_args" if key else "init_args"
        name = option.group(1)
        hint = closest(name, accepted_arguments(path.group(1)))
        line = f"{where}.{name}: not an argument of {path.group(1)}{hint}"
        return in_recipe(f"{where}.{name}", line, recipes)
    unknown = UNKNOWN_KEY.search(message)
    if unknown:
        name = next(g for g in unknown.groups() if g).lstrip("-").split("=")[0]
        return in_recipe(name, f"{name}: not an accepted option{closest(name, known_keys)}", recipes)
    first = message.strip().splitlines()[0]
    bare = BARE_KEY.match(first)
    return key_problem(bare.group(1), message) if bare else first
