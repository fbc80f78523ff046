"""Every image file sfda reads is opened here, and read as a viewer shows it.

- EXIF orientation is applied (a phone's portrait JPEG is stored sideways with a tag that says so):
  pixels, and the sizes that boxes and joints are checked against, are those of the DISPLAYED image;
  an annotation's stated width and height must be the displayed ones (``check_stated_size``).
- Transparency (RGBA, LA, palette or RGB/L/16-bit grey images with a transparent colour) is composited
  onto a white background, as a page shows it (a black picture drawn in the alpha channel stays
  visible). An image whose picture compositing would lose is refused, naming the file (``picture_lost``):
  the composite spans at most ``LOST_SPREAD`` grey levels while the colour channels (a picture in fully
  transparent pixels) or the alpha channel (a white picture drawn only in alpha) span more than
  ``LOST_SPREAD`` and more than ``LOST_RATIO`` times as many. Ordinary transparent-background images
  (the background becomes white, the picture stays) and ordinary low-contrast images (the composite
  spans what the colours span) pass.
- A multi-page TIFF is refused naming the file and its page count (only one page would be read).
- A symbolic link whose target is missing, named as an image, is refused naming the link and its
  target (``images_in``); links to images are read as their targets.
- 16-bit and float images are scaled from their true range (see ``eight_bit``).
- An image of more than ``PixelLimit.pixels`` pixels is refused before it is decoded, naming the file,
  its size, the limit and the option that raises it (PIL's own decompression-bomb check is replaced by
  this one).
- Folders: ``images_in`` lists the images of a folder and says what it skipped (other file types,
  sub-folders), so a dataset never changes in silence. Hidden entries (``.DS_Store``) are never data.
- Text files (lists, annotations) are read by ``sfda.data.text_files``.
"""

from __future__ import annotations

import operator
import os
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
HIGH_BIT_RANGES = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}
ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
ORIENTATION_TAG = 0x0112
SIDEWAYS = {5, 6, 7, 8}  # EXIF orientations that swap width and height
BACKGROUND = 255  # transparent pixels are composited onto white
LOST_SPREAD = 16  # a composite spanning at most this many grey levels is near-flat ...
LOST_RATIO = 4  # ... and its picture lost if the colour or alpha channels span LOST_RATIO times more


class PixelLimit(NamedTuple):
    """The most pixels an image may have, and the recipe option that raises it (None: no option)."""

    pixels: int = 178_956_970  # PIL's decompression-bomb limit (2 x Image.MAX_IMAGE_PIXELS)
    option: str | None = None


DEFAULT_LIMIT = PixelLimit()
_said: set[str] = set()


class PathTable(Sequence):
    """File paths held compactly: their bytes in one string and ``(N + 1,)`` int64 offsets, about 90 bytes
    an entry where a list of ``Path`` objects takes 500 (291 MiB for 600,000 images). Item ``i`` is a
    ``Path`` made on access; an integer array or a slice gives another table."""

    def __init__(self, paths):
        encoded = [os.fsencode(p) for p in paths]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self.offsets[1:])
        self.blob = b"".join(encoded)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            index = operator.index(key)
            if not -len(self) <= index < len(self):
                raise IndexError(f"PathTable: index {index} out of range for {len(self)} paths")
            index %= len(self)
            return Path(os.fsdecode(self.blob[self.offsets[index] : self.offsets[index + 1]]))
        picked = range(len(self))[key] if isinstance(key, slice) else np.asarray(key, dtype=np.int64)
        return PathTable(self[int(i)] for i in picked)

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(other) == len(self) and all(
            Path(a) == b for a, b in zip(other, self, strict=True))

    def __repr__(self) -> str:
        return f"PathTable({len(self)} paths)"


def note(message: str) -> None:
    """Print ``sfda: note: <message>`` to stderr, once per process."""
    if message not in _said:
        _said.add(message)
        print(f"sfda: note: {message}", file=sys.stderr, flush=True)


def visible(path: Path) -> bool:
    """False for hidden entries (``.ipynb_checkpoints``, ``.DS_Store``): they are never data."""
    return not path.name.startswith(".")


def hidden_below(path: Path, folder: Path) -> bool:
    """True if ``path`` or a folder between it and ``folder`` is hidden."""
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def images_in(folder: Path, what: str, recursive: bool = False) -> tuple[list[Path], list[Path]]:
    """``(images, skipped)``: the image files of ``folder`` (all levels when ``recursive``) in sorted order,
    and the visible entries left out (other file types; sub-folders when not ``recursive``, links to
    folders when ``recursive``). A broken link named as an image is refused (``refuse_broken_links``).
    Skipped entries are announced with ``note``, naming ``what`` the folder is, the count and an example."""
    if recursive:
        entries = [p for p in folder.rglob("*")  # links to folders are not followed: announced
                   if (p.is_symlink() or not p.is_dir()) and not hidden_below(p, folder)]
    else:
        entries = [p for p in folder.iterdir() if visible(p)]
    refuse_broken_links(entries, what)
    images = sorted(p for p in entries if p.is_file() and is_image_name(p))
    skipped = sorted(p for p in entries if not (p.is_file() and is_image_name(p)))
    if skipped:
        folders = "links to folders" if recursive else "sub-folders"
        note(f"{what}: skipped {len(skipped)} entries of {folder} that are not images "
             f"({', '.join(sorted(IMAGE_SUFFIXES))}) or are {folders} and read {len(images)} images; "
             f"e.g. '{skipped[0].name}'")
    return images, skipped


def refuse_broken_links(entries: list[Path], what: str) -> None:
    """Refuse a symbolic link named as an image whose target is missing (a moved or deleted image)."""
    for path in sorted(entries):
        if path.is_symlink() and not path.exists() and is_image_name(path):
            raise FileNotFoundError(f"{what}: {path} is a broken symbolic link: its target "
                                    f"{os.readlink(path)} does not exist; expected an image file (restore "
                                    "the image or remove the link)")


def refuse_single_images(locations: dict[str, list[str]], expected: str) -> None:
    """Refuse an image file given (as ``data.<split>``) where ``expected`` files or folders belong."""
    for split, given in locations.items():
        for location in given:
            path = Path(str(location)).expanduser()
            if path.is_file() and is_image_file(path):
                raise ValueError(f"data.{split}: '{location}' is a single image file; expected {expected}")


def is_image_file(path: Path) -> bool:
    """True if ``path`` is named as an image or PIL recognises its header as one."""
    return is_image_name(path) or sniffed_image(path)


def sniffed_image(path: Path) -> bool:
    """True if PIL recognises ``path``'s header as an image (a file with another suffix)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with pixel_check_off(), Image.open(path):
            return True
    except (UnidentifiedImageError, OSError, ValueError):
        return False


@contextmanager
def pixel_check_off():
    """PIL's decompression-bomb check off for the block: ``check_pixels`` makes it, naming the file."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


@contextmanager
def opened(path: str | Path, where: str):
    """The image at ``path`` opened (header read, nothing decoded); ``where`` says who named it (for
    messages). A missing or unreadable file, or a multi-page TIFF, raises naming it."""
    from PIL import Image, UnidentifiedImageError

    with pixel_check_off():
        try:
            img = Image.open(path)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{path}: image file not found ({where})") from err
        except (UnidentifiedImageError, OSError) as err:
            raise OSError(f"{path}: corrupt or unreadable image ({where}): {err}") from err
        with img:
            check_pages(img, path, where)
            yield img


def orientation(img) -> int:
    """The EXIF orientation of an opened image from its header, before decoding (1, upright, when there
    is none or it is unreadable; a PNG's eXIf chunk counts only before the pixel data, so that the size
    known from the header and the pixels decoded always agree)."""
    if img.format == "PNG" and "exif" not in img.info:
        return 1
    try:
        value = img.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block: PIL shows the stored pixels, so do we
        return 1
    return value if isinstance(value, int) else 1


def displayed_size(path: str | Path, where: str) -> tuple[int, int]:
    """``(width, height)`` of the image as displayed (EXIF orientation applied), from its header."""
    with opened(path, where) as img:
        width, height = img.size
        return (height, width) if orientation(img) in SIDEWAYS else (width, height)


def check_stated_size(path: str | Path, stated: tuple[int, int], where: str) -> tuple[int, int]:
    """The image's displayed ``(width, height)`` (EXIF orientation applied, from its header); a stated
    ``(width, height)`` (an annotation file's; 0 = not stated) that differs from it is refused: annotation
    coordinates refer to the displayed image."""
    shown = displayed_size(path, where)
    if all(stated) and tuple(stated) != shown:
        turned = ", turned by its EXIF orientation" if tuple(stated) == shown[::-1] else ""
        raise ValueError(f"{where}: width x height {stated[0]}x{stated[1]}, but {path} displays as "
                         f"{shown[0]}x{shown[1]}{turned}; expected the displayed size (coordinates refer to "
                         "the image as a viewer shows it)")
    return shown


def check_pixels(img, path, where: str, limit: PixelLimit) -> None:
    """Refuse an image of more than ``limit.pixels`` pixels before it is decoded."""
    width, height = img.size
    if width * height <= limit.pixels:
        return
    fix = (f"raise {limit.option} if the image is genuine (detection tiles large images)" if limit.option
           else "shrink or split the image")
    raise OSError(f"{path}: image too large to decode safely ({where}): {width}x{height} = "
                  f"{width * height:,} pixels, more than the limit of {limit.pixels:,}; {fix}")


def check_pages(img, path, where: str) -> None:
    """Refuse a multi-page TIFF: only its first page would be read, the others dropped in silence."""
    pages = getattr(img, "n_frames", 1)
    if img.format == "TIFF" and pages > 1:
        raise OSError(f"{path}: a multi-page TIFF of {pages} pages ({where}); only the first would be read. "
                      "Expected one image per file: save each page as its own image")


def read_image(path: str | Path, index: int, limit: PixelLimit = DEFAULT_LIMIT) -> np.ndarray:
    """The image file ``path`` (sample ``index``) as displayed, ``HxW`` or ``HxWx3`` uint8 (see the module
    docstring); a missing, corrupt, oversized or alpha-only file raises naming it."""
    where = f"sample index {index}"
    with opened(path, where) as img:
        check_pixels(img, path, where, limit)
        try:
            return eight_bit(upright(img), path)
        except (OSError, ValueError) as err:
            if str(err).startswith(str(path)):
                raise
            raise OSError(f"{path}: corrupt or unreadable image ({where}): {err}") from err


def upright(img):
    """The image decoded and turned as its EXIF orientation says."""
    from PIL import Image

    turns = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }
    turn = turns.get(orientation(img))
    img.load()
    return img if turn is None else img.transpose(turn)


def eight_bit(img, path) -> np.ndarray:
    """An opened PIL image as ``HxW`` or ``HxWx3`` uint8 on its TRUE range: 16-bit images (and 32-bit
    integer ones holding 16-bit data, as PNG readers give them) are scaled by 255/65535, float images
    must hold [0, 1]; transparent images are composited onto white (``opaque``); palette, bilevel and
    other modes become RGB. Anything else is refused naming the file."""
    keyed = "transparency" in img.info
    if img.mode in ALPHA_MODES or (img.mode in ("P", "L", "RGB") and keyed):
        return opaque(img, path)
    if img.mode in ("L", "RGB"):
        return np.asarray(img)
    if img.mode not in HIGH_BIT_RANGES:
        return np.asarray(img.convert("RGB"))
    values = np.asarray(img, dtype=np.float64)
    top = HIGH_BIT_RANGES[img.mode]
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > top:
        raise OSError(f"{path}: {img.mode} pixel values in [{values.min()}, {values.max()}], expected "
                      f"[0, {top}] (16-bit integers, or floats in [0, 1])")
    scaled = values * (255.0 / top)
    if keyed and isinstance(img.info["transparency"], (int, float)):  # a 16-bit grey PNG's tRNS colour
        alpha = (values != img.info["transparency"]).astype(np.float64)
        return composite(scaled[..., None], alpha[..., None], path)[..., 0]
    return np.round(scaled).astype(np.uint8)


def opaque(img, path) -> np.ndarray:
    """A transparent 8-bit image composited onto white (grey images stay grey; see ``composite``)."""
    grey = img.mode in ("LA", "La", "L")
    pixels = np.asarray(img.convert("LA" if grey else "RGBA"), dtype=np.float64)
    shown = composite(pixels[..., :-1], pixels[..., -1:] / 255.0, path)
    return shown[..., 0] if grey else shown


def composite(colour: np.ndarray, alpha: np.ndarray, path) -> np.ndarray:
    """``colour`` (``HxWxC``, 0..255) over white with ``alpha`` (``HxWx1``, 0..1) as uint8; refused when
    the picture is lost (``picture_lost``)."""
    shown = np.round(colour * alpha + BACKGROUND * (1.0 - alpha)).astype(np.uint8)
    lost = picture_lost(shown, colour, alpha)
    if lost:
        raise ValueError(f"{path}: {lost}; transparent images are composited onto white (as a page shows "
                         f"them), which leaves only {int(shown.min())}..{int(shown.max())}: save the "
                         "picture in the colour channels of an opaque image (e.g. as a grey image of the "
                         "alpha)")
    return shown


def picture_lost(shown: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> str:
    """Why compositing loses the picture ('' if it does not): the composite spans at most
    ``LOST_SPREAD`` grey levels while the alpha channel (as grey levels) or the colour channels span more
    than ``LOST_SPREAD`` and more than ``LOST_RATIO`` times as many."""
    kept, in_alpha, in_colour = float(np.ptp(shown)), 255.0 * float(np.ptp(alpha)), float(np.ptp(colour))
    carried = max(LOST_RATIO * kept, LOST_SPREAD)  # what a channel must span to carry a lost picture
    if kept > LOST_SPREAD or max(in_alpha, in_colour) <= carried:
        return ""
    if in_alpha >= in_colour:
        return (f"the picture is only in the alpha channel (alpha varies from {alpha.min():.2f} to "
                f"{alpha.max():.2f}, the colour channels span {in_colour:.0f} grey levels)")
    return (f"the picture is in transparent pixels (the colour channels span {in_colour:.0f} grey "
            f"levels, alpha is {alpha.min():.2f} to {alpha.max():.2f})")
