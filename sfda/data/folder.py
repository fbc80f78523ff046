"""A datamodule for a user's own images: an image folder or a list file."""

from __future__ import annotations

from pathlib import Path

from .datamodules import ImageClassificationDataModule, Role
from .image_files import IMAGE_SUFFIXES, PathTable, images_in, is_image_name, note, visible
from .text_files import text_of
from .transforms import InputSpec, View

LIST_EXPECTED = "an image folder or a text list file of lines 'path [label]'"


def folder_order(names: list[str]) -> list[str]:
    """Class folder names in a stable order when no model gives one: by number when every name is an
    integer ("2" before "10"), else alphabetical."""
    return sorted(names, key=int) if all(n.lstrip("-").isdigit() for n in names) else sorted(names)


def read_image_source(location: str, class_names: list[str] | None, field_name: str,
                      nested: bool = False) -> tuple[PathTable, list[int] | None, list[str]]:
    """Paths (a ``PathTable``), labels (or None) and class names from a folder or a list file.

    - a folder with one sub-folder per class (ImageFolder layout): a folder's label is the
      position of its name in ``class_names`` (the model's output order); without names, the
      order of ``folder_order``. Hidden folders and files are ignored; other skipped files are
      announced; a folder inside a class folder is refused unless ``nested`` (then its images join
      the class); a class folder whose visible files are all skipped is refused, an empty one (or one
      of hidden files only) is announced (a target may lack a class); images beside the class folders
      are refused (they would be left out), other files there are announced. Two class folders that are
      one folder (symbolic links) are refused naming both; a link to an image is read as its target,
      but one image file reached twice (a symbolic or hard link beside its target, in any class folder) is
      refused.
    - a flat folder of images (unlabelled)
    - a text file of lines ``path [label]`` (label an int index or a class name; paths
      relative to the file's folder)
    """
    root = Path(location).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"data.{field_name}: '{root}' does not exist (expected an image folder or a "
                                "list file)")
    if root.is_file():
        return _read_list(root, class_names, field_name)
    subdirs = [p for p in root.iterdir() if p.is_dir() and visible(p)]
    if subdirs:
        return _read_class_folders(root, subdirs, class_names, field_name, nested)
    files, _ = images_in(root, f"data.{field_name}")
    return PathTable(_nonempty(files, root, field_name)), None, list(class_names or [])


def _read_class_folders(root: Path, subdirs: list[Path], class_names: list[str] | None, field_name: str,
                        nested: bool) -> tuple[list[Path], list[int], list[str]]:
    names = list(class_names or folder_order([p.name for p in subdirs]))
    missing = sorted(p.name for p in subdirs if p.name not in names)
    if missing:
        raise ValueError(f"data.{field_name}: folders {missing} in {root} are not class names of the "
                         f"model; class folders found: {sorted(p.name for p in subdirs)}, expected names "
                         f"from class_names {names}")
    _refuse_loose_images(root, field_name)
    _refuse_same_folders(subdirs, field_name)
    paths, labels = [], []
    for sub in sorted(subdirs, key=lambda p: names.index(p.name)):
        files = _class_images(sub, field_name, nested)
        paths += files
        labels += [names.index(sub.name)] * len(files)
    _refuse_same_images(paths, field_name)
    return PathTable(_nonempty(paths, root, field_name)), labels, names


def _refuse_loose_images(root: Path, field_name: str) -> None:
    """Refuse images beside the class folders (they would be left out); announce other files there."""
    files = sorted(p for p in root.iterdir() if visible(p) and not p.is_dir())
    loose = [p for p in files if is_image_name(p)]
    if loose:
        raise ValueError(f"data.{field_name}: {len(loose)} images lie in {root} beside its class folders "
                         f"(e.g. '{loose[0].name}') and would be left out; expected every image inside a "
                         "class folder <folder>/<class name>/<image>")
    if files:
        note(f"data.{field_name}: skipped {len(files)} files of {root} beside its class folders (only "
             f"folders are classes); e.g. '{files[0].name}'")


def _refuse_same_folders(subdirs: list[Path], field_name: str) -> None:
    """Refuse two class folders that are the same folder (one a symbolic link to the other, or both
    links to one folder): its images would be read under two labels."""
    seen: dict[Path, Path] = {}
    for sub in sorted(subdirs):
        first = seen.setdefault(sub.resolve(), sub)
        if first != sub:
            raise ValueError(f"data.{field_name}: class folders '{first.name}' and '{sub.name}' in "
                             f"{sub.parent} are the same folder {sub.resolve()} (a symbolic link), so its "
                             "images would be read under two labels; expected one folder per class")


def _refuse_same_images(paths: list[Path], field_name: str) -> None:
    """Refuse two entries of the class folders that are one image file (symbolic links to images are
    read as their targets; a link to an image of another class would give it two labels)."""
    seen: dict[tuple[int, int], Path] = {}  # (device, inode) of the file read: one stat an entry, where
    for path in paths:                     # resolving every path costs a stat per component
        status = path.stat()
        first = seen.setdefault((status.st_dev, status.st_ino), path)
        if first != path:
            raise ValueError(f"data.{field_name}: {first} and {path} are the same image file "
                             f"{path.resolve()} (a symbolic or hard link), so it would be read twice, under "
                             "the labels of both folders; expected each image once")


def _class_images(sub: Path, field_name: str, nested: bool) -> list[Path]:
    """The images of class folder ``sub`` (see ``read_image_source``)."""
    inner = sorted(p for p in sub.iterdir() if p.is_dir() and visible(p))
    if inner and not nested:
        raise ValueError(f"data.{field_name}: class folder {sub} holds the folder '{inner[0].name}'; its "
                         f"images would silently join class '{sub.name}'. Expected only images in a class "
                         "folder: move the folder out, or set data.nested_folders: true to read the images "
                         "of folders inside class folders as that class")
    files, skipped = images_in(sub, f"data.{field_name}", recursive=nested)
    if skipped and not files:
        raise ValueError(f"data.{field_name}: class folder {sub} has no images: all its {len(skipped)} "
                         f"files were skipped (e.g. '{skipped[0].name}'), so class '{sub.name}' would "
                         f"vanish; expected images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if not files:
        note(f"data.{field_name}: class folder {sub} is empty: class '{sub.name}' has no images here")
    return files


def _nonempty(paths: list[Path], root: Path, field_name: str) -> list[Path]:
    if not paths:
        raise ValueError(f"data.{field_name}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in "
                         f"{root}")
    return paths


def _read_list(path: Path, class_names: list[str] | None, field_name: str):
    paths, labels = [], []
    for number, line in enumerate(text_of(path, f"data.{field_name}", LIST_EXPECTED).splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        candidate = path.parent / parts[0] if len(parts) == 2 else path.parent / line.strip()
        if len(parts) == 2 and not candidate.exists() and (path.parent / line.strip()).exists():
            parts = [line.strip()]  # a path with a space and no label
        paths.append(path.parent / parts[0])
        if len(parts) == 2:
            labels.append(_parse_label(parts[1], class_names, path, number))
    if labels and len(labels) != len(paths):
        raise ValueError(f"{path}: some lines have a label and some do not; label every line or none")
    names = list(class_names or ([str(i) for i in range(max(labels) + 1)] if labels else []))
    return PathTable(_nonempty(paths, path, field_name)), (labels or None), names


def _parse_label(text: str, class_names: list[str] | None, path: Path, number: int) -> int:
    if class_names and text in class_names:
        return class_names.index(text)
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{path}:{number}: label '{text}' is neither an integer nor one of data.class_names "
                         f"{class_names}") from None
    if class_names and not 0 <= value < len(class_names):
        raise ValueError(f"{path}:{number}: label {value} outside [0, {len(class_names)}) for "
                         "data.class_names")
    return value


class ImageFolderDataModule(ImageClassificationDataModule):
    """Your own images. ``train`` is the unlabelled adaptation set (target) or the labelled
    training set (source); ``val``/``test`` optionally hold labelled images for reporting.

    Args:
        train: image folder or list file.
        val: optional folder or list file for evaluation (defaults to ``train`` for label-free scores).
        test: optional; defaults to ``val``.
        class_names: names in the model's output order (default: the source model's class names;
            for source training, the folder names in ``folder_order``).
        nested_folders: read the images of folders inside a class folder as that class (off: such a
            folder is refused, since a ``backup/`` would otherwise join the class in silence).
    """

    def __init__(self, train: str, val: str | None = None, test: str | None = None,
                 class_names: list[str] | None = None, role: Role = "target", batch_size: int = 64,
                 eval_batch_size: int = 256, num_workers: int = 0, train_view: View = "weak",
                 input: InputSpec | None = None, train_subset: int | None = None,
                 eval_subset: int | None = None, eval_strong_view: bool = False,
                 nested_folders: bool = False, keep_inputs_mib: int = 1024):
        super().__init__(role, batch_size, eval_batch_size, num_workers, train_view, input, train_subset,
                         eval_subset, eval_strong_view, keep_inputs_mib)
        self.locations = {"train": train, "val": val or train, "test": test or val or train}
        self.given_names = class_names
        self.class_names = list(class_names or [])
        self.nested_folders = nested_folders

    def load_splits(self) -> None:
        names = self.given_names
        read: dict[str, tuple] = {}  # a location given for several splits is read (and held) once
        for split in ("train", "val", "test"):
            location = self.locations[split]
            if location not in read:
                read[location] = read_image_source(location, names, split, self.nested_folders)
            paths, labels, found = read[location]
            names = names or (found or None)
            if self.role == "source" and split == "train" and labels is None:
                raise ValueError(f"data.train: source training needs labelled images, but "
                                 f"{self.locations['train']} has no class sub-folders (expected "
                                 "<folder>/<class name>/<image>) and is no labelled list file")
            self.splits[split] = (paths, labels)
        self.class_names = list(names or [])

    def adopt_class_names(self, names: list[str]) -> None:
        """Label class folders by their position in the source model's ``names`` (when the recipe gives
        no ``data.class_names``): called by the adaptation module before any loader is built."""
        if self.given_names is None:
            self.given_names = list(names)
            self.class_names = list(names)
            self.splits = {}  # reloaded with the model's order on first use
