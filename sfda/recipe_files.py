"""Recipe files as the ``sfda`` command reads them: checked text, included recipes merged, and omegaconf
interpolation errors named by file and key.

- A recipe must be UTF-8 text holding a YAML mapping (``trainer:``, ``model:``, ``data:`` ...); an empty
  file, a list, a scalar, YAML that does not parse or other bytes are refused naming the file.
- ``config: other.yaml`` (or a list of them) inside a recipe includes other recipes, the way
  ``--config`` does on the command line, merged deeply as omegaconf merges: the including recipe's keys
  override, the included recipe's other keys are kept at every depth (``trainer``, ``model.init_args``,
  ``data.init_args``). A mapping whose ``class_path`` names another class than the included one replaces
  it whole (the arguments of one class are not given to another); two spellings of one class
  (``sfda.methods.SHOT``, ``sfda.methods.shot.SHOT``, ``SHOT``) are one class, and merge.
  Paths are relative to the including file.
- ``${VAR}`` is an omegaconf interpolation of the recipe key ``VAR``; an environment variable is
  ``${oc.env:VAR}`` or ``${oc.env:VAR,default}``. Errors name the recipe, the key and that fix.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import (
    GrammarParseError,
    InterpolationKeyError,
    OmegaConfBaseException,
    UnsupportedInterpolationType,
)

INCLUDE_KEY = "config"
ENV_HINT = "${oc.env:VAR} (or ${oc.env:VAR,default})"
BOMS = {b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16", b"\xef\xbb\xbf": ""}


class RecipeError(ValueError):
    """A recipe file that cannot be read as a recipe."""


class DuplicateKeyLoader(yaml.SafeLoader):
    """yaml's safe loader that refuses a key given twice in one mapping (YAML keeps the last silently:
    a second ``trainer:`` block would drop the first)."""

    def construct_mapping(self, node, deep=False):
        lines: dict = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in lines:
                raise yaml.MarkedYAMLError(problem=f"key '{key_node.value}' is given twice (lines "
                                                   f"{lines[key_node.value]} and {line}); expected it once",
                                           problem_mark=key_node.start_mark)
            lines[key_node.value] = line
        return super().construct_mapping(node, deep)


def recipe_text(path: Path) -> str:
    """The text of the recipe at ``path``: UTF-8 (a BOM is allowed), else an error naming the file."""
    data = path.read_bytes()
    encoding = next((name for bom, name in BOMS.items() if data.startswith(bom)), "")
    if encoding:
        raise RecipeError(f"recipe {path}: saved as {encoding}; expected UTF-8 text (save it as UTF-8)")
    if data.startswith(b"PK\x03\x04") or b"\x00" in data[:4096]:
        raise RecipeError(f"recipe {path} is a binary file (a checkpoint or source artifact?); expected a "
                          "YAML recipe. A checkpoint goes in --ckpt_path, a source artifact in "
                          "model.init_args.source")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise RecipeError(f"recipe {path}: byte 0x{data[err.start]:02x} on line {line} is not UTF-8; "
                          "expected UTF-8 text (save it as UTF-8)") from err


def checked_yaml(path: Path) -> dict:
    """The recipe at ``path`` parsed as YAML; errors name the file unless it holds a mapping."""
    try:
        loaded = yaml.load(recipe_text(path), Loader=DuplicateKeyLoader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RecipeError(f"recipe {path}: not valid YAML{where} ({problem})") from err
    if loaded is None:
        raise RecipeError(f"recipe {path} is empty; expected a mapping with trainer, model and data")
    if not isinstance(loaded, dict):
        raise RecipeError(f"recipe {path} holds a {type(loaded).__name__} at the top; expected a mapping "
                          "(key: value lines such as trainer:, model:, data:)")
    return loaded


def recipe_mapping(path: Path) -> dict:
    """The recipe at ``path`` as a mapping with values as omegaconf reads them (``1e-3`` a float),
    interpolations unresolved."""
    checked_yaml(path)
    return OmegaConf.to_container(OmegaConf.create(recipe_text(path)), resolve=False)


def imported_class(class_path: str):
    """The object a dotted ``class_path`` names (the recipe names it to be imported), or None."""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError, TypeError):
        return None


def same_class(one, other) -> bool:
    """Whether two ``class_path`` spellings name one class, as jsonargparse resolves them: two paths to one
    object (``sfda.methods.SHOT`` and ``sfda.methods.shot.SHOT``), or a bare name and a path to a class of
    that name (``ImageFolderDataModule``: jsonargparse takes the one subclass of that name)."""
    if one == other:
        return True
    if not (isinstance(one, str) and isinstance(other, str)):
        return False
    if "." not in one and "." not in other:
        return False
    if "." not in one or "." not in other:
        bare, dotted = (one, other) if "." not in one else (other, one)
        found = imported_class(dotted)
        return found is not None and getattr(found, "__name__", None) == bare
    found = imported_class(one)
    return found is not None and found is imported_class(other)


def mergeable(kept, value) -> bool:
    """Whether ``value`` merges into ``kept``: both mappings, and not naming two different classes."""
    if not (isinstance(kept, dict) and isinstance(value, dict)):
        return False
    return same_class(value.get("class_path", kept.get("class_path")), kept.get("class_path"))


def merge(base: dict, override: dict) -> dict:
    """``override`` merged into ``base`` at every depth; a value that is not ``mergeable`` (a scalar, a
    list, a mapping naming another ``class_path``) replaces what ``base`` had."""
    merged = dict(base)
    for key, value in override.items():
        kept = merged.get(key)
        merged[key] = merge(kept, value) if mergeable(kept, value) else value
    return merged


def included_paths(path: Path, mapping: dict) -> list[Path]:
    """The recipes ``path`` includes with ``config:``, relative to its folder; errors name the key."""
    value = mapping.get(INCLUDE_KEY)
    names = value if isinstance(value, list) else [value]
    if not all(isinstance(n, str) and n for n in names):
        raise RecipeError(f"recipe {path}: config: {value!r}; expected the path of a recipe to include, or a "
                          "list of them")
    paths = [(path.parent / Path(n).expanduser()).resolve() for n in names]
    for name, included in zip(names, paths, strict=True):
        if not included.is_file():
            raise RecipeError(f"recipe {path}: config: {name}: {included} is not a file; expected a recipe "
                              "to include (a path relative to this recipe's folder)")
    return paths


def expanded_recipe(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The recipe at ``path`` with the recipes it includes merged under it (see the module docstring)."""
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(p.name for p in (*seen, path))
        raise RecipeError(f"recipe {seen[0]}: includes itself ({chain}); expected includes without a cycle")
    mapping = recipe_mapping(path)
    if INCLUDE_KEY not in mapping:
        return mapping
    merged: dict = {}
    for included in included_paths(path, mapping):
        merged = merge(merged, expanded_recipe(included, (*seen, path)))
    return merge(merged, {k: v for k, v in mapping.items() if k != INCLUDE_KEY})


def recipe_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[Path]:
    """``path`` and then every recipe it includes, at any depth, each once (where relative model files are
    looked up, and which files an interpolation error may be in)."""
    mapping = checked_yaml(path)
    if INCLUDE_KEY not in mapping or path.resolve() in seen:
        return [path]
    inner = (*seen, path.resolve())
    return [path, *(p for included in included_paths(path, mapping) for p in recipe_chain(included, inner)
                    if p.resolve() not in inner)]


def holds_key(mapping, key: str) -> bool:
    """Whether nested ``mapping`` has dotted ``key``."""
    for part in key.split("."):
        if not isinstance(mapping, dict) or part not in mapping:
            return False
        mapping = mapping[part]
    return True


def recipe_holding(key: str, paths: list[Path]) -> Path | None:
    """The first of ``paths`` (or a recipe one includes) that writes dotted ``key``; None when none does
    (the key came from the command line) or a recipe cannot be read."""
    try:
        for path in paths:
            for recipe in recipe_chain(Path(path)):
                if holds_key(checked_yaml(recipe), key):
                    return recipe
    except (OSError, RecipeError):
        return None
    return None


def recipe_content(path: Path) -> str | None:
    """The text the parser should read for the recipe at ``path``: None to read the file as it is (checked
    first), or the merged YAML of a recipe that includes others."""
    if INCLUDE_KEY not in checked_yaml(path):
        return None
    return OmegaConf.to_yaml(OmegaConf.create(expanded_recipe(path)))


def interpolation_error(path, err: OmegaConfBaseException) -> RecipeError:
    """An omegaconf error while reading ``path`` as one line naming the recipe, the key and the fix."""
    key = getattr(err, "full_key", None) or "?"
    detail = str(err).splitlines()[0]
    if isinstance(err, InterpolationKeyError):
        fix = (f"expected a key of the recipe (e.g. ${{trainer.max_epochs}}), or for an environment "
               f"variable {ENV_HINT}")
    elif "Environment variable" in detail:
        fix = "expected that variable set, or a default: ${oc.env:VAR,default}"
    elif isinstance(err, UnsupportedInterpolationType):
        fix = f"expected a key of the recipe, or omegaconf's resolvers such as {ENV_HINT}"
    elif isinstance(err, GrammarParseError):
        fix = f"expected ${{key}} or {ENV_HINT} with its braces closed (\\${{ for a literal ${{)"
    else:
        fix = f"expected ${{key}} naming a key of the recipe, or {ENV_HINT}"
    others = [str(p) for p in recipe_chain(Path(path))[1:]]
    where = f"{path} (or {', '.join(others)}, which it includes)" if others else str(path)
    return RecipeError(f"recipe {where}: {key}: {detail}; {fix}")
