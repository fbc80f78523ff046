"""A sweep folder belongs to one study. ``sweep.json`` in it names the study that owns it; a study never
writes into a folder another study owns, nor into one holding trial folders or results its storage does
not know (its journal was deleted or replaced): those files are kept as they are and the sweep is refused
before any trial runs, with what is there and what to do.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .storage import SweepError

MARKER = "sweep.json"
STUDY_FILES = ("trials.csv", "best_recipe.yaml")
TRIAL_FOLDER = re.compile(r"trial_(\d+)")


def trial_folder(sweep_dir: Path, number: int) -> Path:
    """The folder of trial ``number``: ``<sweep dir>/trial_<number>``."""
    return Path(sweep_dir) / f"trial_{number:04d}"


def check_writable(sweep_dir: Path) -> None:
    """Create ``sweep_dir`` if needed and prove a file can be written in it; refuse it, naming it, if not."""
    probe = Path(sweep_dir) / f".sfda-write-check.{os.getpid()}"
    try:
        Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise SweepError(
            f"--sweep_dir {sweep_dir}: cannot be written ({type(err).__name__}: {err.strerror or err}); "
            "expected a folder this user can create and write (the trials, trials.csv and "
            "best_recipe.yaml go there)"
        ) from None


def owner(sweep_dir: Path) -> str | None:
    """The study named in ``sweep_dir``'s ``sweep.json``, or None when it has none."""
    path = Path(sweep_dir) / MARKER
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["study"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SweepError(
            f"--sweep_dir {sweep_dir}: {MARKER} is not the record sfda writes ({err}); expected "
            '{"study": <name>}; this folder may hold another sweep: choose another --sweep_dir'
        ) from None


def check_owner(sweep_dir: Path, study: str) -> None:
    """Refuse ``sweep_dir`` when ``sweep.json`` names another study."""
    found = owner(sweep_dir)
    if found is not None and found != study:
        raise SweepError(
            f"--sweep_dir {sweep_dir}: holds the files of study {found!r} ({MARKER}); study {study!r} "
            f"would overwrite its trials.csv, best_recipe.yaml and trial folders. Expected a folder of "
            f"its own: choose another --sweep_dir (e.g. {Path(sweep_dir) / study}), or --study {found} to "
            "continue that study"
        )


def folder_trials(sweep_dir: Path) -> list[int]:
    """The numbers of the ``trial_<number>`` folders in ``sweep_dir``."""
    if not Path(sweep_dir).is_dir():
        return []
    found = (TRIAL_FOLDER.fullmatch(p.name) for p in Path(sweep_dir).iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


def check_known(sweep_dir: Path, study: str, storage: str, on_disk: list[int], known: set[int]) -> None:
    """Refuse ``sweep_dir`` when it holds trial folders (``on_disk``, listed BEFORE ``known`` was read, so
    a trial another worker adds meanwhile is not mistaken) or results that ``study`` does not know."""
    unknown = [n for n in on_disk if n not in known]
    results = [name for name in STUDY_FILES if (Path(sweep_dir) / name).exists()] if not known else []
    if not unknown and not results:
        return
    what = [f"trial folders {', '.join(trial_folder(sweep_dir, n).name for n in unknown[:5])}"
            f"{' ...' if len(unknown) > 5 else ''}"] if unknown else []
    raise SweepError(
        f"--sweep_dir {sweep_dir}: holds {', '.join(what + results)} that study {study!r} in {storage} "
        f"does not have ({len(known)} trials there; was its journal deleted or replaced?). They are kept "
        "as they are: to continue that study, restore its --storage; to start a new one, choose another "
        "--sweep_dir (or move this folder away)"
    )


def claim(sweep_dir: Path, study: str) -> None:
    """Write ``sweep.json`` naming ``study`` unless the folder has one (workers starting together: the
    first writes it, the others find it); then check it names ``study``."""
    path = Path(sweep_dir) / MARKER
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"study": study}) + "\n", encoding="utf-8")
        os.link(tmp, path)  # atomic, and never replaces a marker another worker wrote
    except FileExistsError:
        pass
    except OSError as err:
        raise SweepError(f"--sweep_dir {sweep_dir}: cannot write {MARKER} ({err.strerror or err})") from None
    finally:
        tmp.unlink(missing_ok=True)
    check_owner(sweep_dir, study)
