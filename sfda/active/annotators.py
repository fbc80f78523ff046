"""Who provides the labels of queried samples: stored benchmark labels, or a person through files.

An annotator is called once per round with the queried GLOBAL sample indices and returns
their labels ``(n,)`` in the same order, or raises ``AwaitingLabels`` (a clean exit) when a
person has not labelled them yet.
"""

from __future__ import annotations

import csv
import io
import sys
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ..data.text_files import text_of


class AwaitingLabels(SystemExit):
    """Raised (exit status 0) when the queried samples of a round are not labelled yet; the run
    stops cleanly and is resumed once ``labels.csv`` is written (the message says how)."""

    def __init__(self, message: str):
        super().__init__(0)
        self.message = message


class LabelsFileError(ValueError):
    """A labels file that cannot be used as is (unknown index or class, duplicate row)."""


class Annotator(ABC):
    """Base: ``annotate(round_index, indices, datamodule, root, is_writer) -> labels (n,)``.

    Args of ``annotate``:
        round_index: 1-based round number.
        indices: ``(n,)`` numpy int64 global indices of the queried target samples.
        datamodule: the target datamodule (class names, raw samples, stored labels).
        root: the run root (``trainer.default_root_dir``), stable across resumed runs.
        is_writer: this process writes files (rank 0); every process reads them.
        resume_from: the checkpoint a re-run should resume from ('' when a plain re-run will do).
    """

    @abstractmethod
    def annotate(self, round_index: int, indices: np.ndarray, datamodule, root: Path, is_writer: bool,
                 resume_from: str = "") -> np.ndarray:
        """Labels ``(n,)`` of ``indices`` in order, or raise ``AwaitingLabels``."""


class StoredLabels(Annotator):
    """Benchmark annotator: reveals the stored target labels of exactly the queried samples
    (``datamodule.reveal_labels``; every other path to target training labels is sealed)."""

    def annotate(self, round_index: int, indices: np.ndarray, datamodule, root: Path, is_writer: bool,
                 resume_from: str = "") -> np.ndarray:
        labels = np.asarray(datamodule.reveal_labels(indices), dtype=np.int64)
        bad = labels[(labels < 0) | (labels >= len(datamodule.class_names))]
        if len(bad):
            raise ValueError(f"stored target labels {sorted(set(bad.tolist()))} are outside the model's "
                             f"classes [0, {len(datamodule.class_names)}); active adaptation needs a "
                             "closed-set target")
        return labels


class FileAnnotator(Annotator):
    """A person labels the queried samples through two CSV files per round.

    Round r writes ``<directory>/round_<r>/to_label.csv`` (``index,image``: the image's path,
    or a PNG exported to ``images/`` for array datasets) and waits for the person's
    ``labels.csv`` beside it (``index,label`` or ``image,label``; label a class id or a class
    name). When it is missing or incomplete the run stops with instructions (exit status 0);
    re-running resumes and reads it. Nothing is ever overwritten except ``to_label.csv``.

    Args:
        directory: where round folders go; default ``<run root>/annotations`` (stable across the
            run's versions, so a resumed run finds the labels).
    """

    def __init__(self, directory: str | None = None):
        self.directory = directory

    def folder(self, root: Path, round_index: int) -> Path:
        return Path(self.directory or Path(root) / "annotations") / f"round_{round_index:02d}"

    def annotate(self, round_index: int, indices: np.ndarray, datamodule, root: Path, is_writer: bool,
                 resume_from: str = "") -> np.ndarray:
        folder = self.folder(root, round_index)
        images = {int(i): self._image_path(folder, int(i), datamodule, is_writer) for i in indices}
        rows = [[str(i), images[i]] for i in indices.tolist()]
        listing, labels_file = folder / "to_label.csv", folder / "labels.csv"
        previous = _read_listing(listing)
        if previous is not None and previous != rows and labels_file.exists():
            raise LabelsFileError(f"{labels_file}: written for another query ({listing} lists other "
                                  f"samples or images than round {round_index} queries now, e.g. another "
                                  f"target set); move {folder} away or set "
                                  "model.annotator.init_args.directory to a new folder")
        if is_writer and previous != rows:
            folder.mkdir(parents=True, exist_ok=True)
            with open(listing, "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["index", "image"])
                writer.writerows(rows)
        given = read_labels_file(labels_file, images, datamodule.class_names) if labels_file.exists() else {}
        missing = [i for i in indices.tolist() if i not in given]
        if missing:
            message = (f"Round {round_index}: {len(missing)} of {len(indices)} queried samples still need "
                       "a label.\n"
                       f"  1. Label the images listed in {folder / 'to_label.csv'}\n"
                       f"  2. Write {labels_file} with the header 'index,label' (label: a class id or one of "
                       f"{datamodule.class_names})\n"
                       "  3. Run the same `sfda fit` command again"
                       + (f" with --ckpt_path={resume_from}" if resume_from else "")
                       + "; it continues with this round.\n")
            if is_writer:
                print(message, file=sys.stderr)
            raise AwaitingLabels(message)
        return np.asarray([given[i] for i in indices.tolist()], dtype=np.int64)

    @staticmethod
    def _image_path(folder: Path, index: int, datamodule, is_writer: bool) -> str:
        raw = datamodule.raw_sample(index)
        if isinstance(raw, (str, Path)):
            return str(Path(raw).resolve())
        path = folder / "images" / f"{index}.png"
        if is_writer and not path.exists():
            from PIL import Image

            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(raw, dtype=np.uint8)).save(path)
        return str(path.resolve())


def _read_listing(path: Path) -> list[list[str]] | None:
    """The ``index,image`` rows of a round's ``to_label.csv`` (None when there is none yet)."""
    if not path.exists():
        return None
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return [row[:2] for row in list(csv.reader(handle))[1:] if row]


def read_labels_file(path: Path, images: dict[int, str], class_names: list[str]) -> dict[int, int]:
    """``{index: class id}`` from a person's labels CSV (``index,label`` or ``image,label``; ``path`` =
    ``image``).

    Raises ``LabelsFileError`` naming the file and line for an index or image that was not
    queried this round, a label that is neither a class id nor a class name, or a sample
    labelled twice. Unlabelled queried samples are simply absent from the result.
    """
    by_image = {image: index for index, image in images.items()}
    given: dict[int, int] = {}
    first_line: dict[int, int] = {}
    text = text_of(Path(path), "labels file", "a CSV with the header 'index,label' or 'image,label'")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows or [c.strip().lower() for c in rows[0][:2]] not in (["index", "label"], ["image", "label"],
                                                                    ["path", "label"]):
        raise LabelsFileError(f"{path}:1: expected the header 'index,label' or 'image,label' (or "
                              f"'path,label'), got {rows[0] if rows else 'an empty file'}")
    keyed_by_image = rows[0][0].strip().lower() in ("image", "path")
    for number, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise LabelsFileError(f"{path}:{number}: expected two columns (key,label), got {row}")
        key, text = row[0].strip(), row[1].strip()
        if keyed_by_image:
            index = by_image.get(key, by_image.get(str(Path(key).resolve())))
            if index is None:
                raise LabelsFileError(f"{path}:{number}: image '{key}' was not queried this round (see "
                                      "to_label.csv)")
        else:
            if not key.lstrip("-").isdigit() or int(key) not in images:
                raise LabelsFileError(f"{path}:{number}: index '{key}' was not queried this round; expected "
                                      "one of the indices in to_label.csv")
            index = int(key)
        if index in given:
            raise LabelsFileError(f"{path}:{number}: sample {index} is labelled twice (first on line "
                                  f"{first_line[index]}); keep one row per sample")
        given[index], first_line[index] = parse_class(text, class_names, path, number), number
    return given


def parse_class(text: str, class_names: list[str], path: Path, number: int) -> int:
    """A class id from ``text``: a class name, else an integer id in ``[0, len(class_names))``."""
    if text in class_names:
        return class_names.index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(class_names):
        return int(text)
    raise LabelsFileError(f"{path}:{number}: label '{text}' is neither a class id in [0, {len(class_names)}) "
                          f"nor one of the class names {class_names}")
