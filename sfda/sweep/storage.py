"""Where a sweep's Optuna study lives: a journal file in the sweep folder (the default, no server) or an
RDB URL that several workers, processes or machines, share (``sqlite:///...``, ``postgresql://...``,
``mysql://...``). ``journal:///<path>`` names a journal file elsewhere (shared disks)."""

from __future__ import annotations

import json
from pathlib import Path

JOURNAL = "journal://"


class SweepError(ValueError):
    """A sweep that cannot run as asked; the message names the option."""


def default_storage(sweep_dir: Path) -> str:
    return f"{JOURNAL}{(Path(sweep_dir).resolve() / 'study.log')}"


def rdb_storage(url: str, attempts: int = 5):
    """Optuna's RDB storage; workers starting together race to create its tables ("table ... already
    exists") or to stamp their schema version ("UNIQUE constraint failed: alembic_version"): the loser
    retries, and finds them made."""
    import random
    import time

    import optuna

    # SQLite: workers and their trials' runs write one file; wait for its lock rather than fail at 5 s
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else None
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine)
        except Exception as err:
            racing = any(sign in str(err) for sign in ("already exists", "UNIQUE constraint failed"))
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random())


def check_journal(path: Path) -> None:
    """Refuse a journal path that is not an Optuna journal, naming it, before Optuna opens it (opening
    appends to it): a file the sweep did not write is never changed. A missing or empty file is a new
    journal; otherwise its first line must be one of Optuna's records (a JSON object with an op_code)."""
    if not path.exists():
        return
    if not path.is_file():
        raise SweepError(f"{path}: is not a file; expected an Optuna journal file (or no file) there")
    try:
        with path.open("rb") as handle:
            first = handle.readline(1 << 20)
    except OSError as err:
        raise SweepError(f"{path}: cannot be read ({err.strerror or err})") from None
    if not first.strip():
        return
    try:
        record = json.loads(first)
    except ValueError:
        record = None
    if not isinstance(record, dict) or "op_code" not in record:
        raise SweepError(
            f"{path}: is not a sweep journal (its first line is not an Optuna journal record); it is kept "
            "as it is. Expected the study.log a sweep writes: choose another --sweep_dir (or --storage), "
            "or move this file away"
        )


def open_storage(url: str):
    """The Optuna storage of ``url``; one that cannot be opened is refused naming ``--storage``."""
    import optuna

    try:
        if url.startswith(JOURNAL):
            path = Path(url[len(JOURNAL) :])
            check_journal(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(path))
            return optuna.storages.JournalStorage(backend)
        return rdb_storage(url)
    except SweepError:
        raise
    except Exception as err:  # SQLAlchemy and the journal raise many types for a bad URL or path
        raise SweepError(
            f"--storage {url}: cannot be opened ({type(err).__name__}: {str(err).splitlines()[0][:300]}); "
            "expected sqlite:///<file>, postgresql://..., mysql://... or journal:///<file>"
        ) from err
