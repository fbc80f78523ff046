"""Every image file sfda reads is opened here, and read as a viewer shows it.

- EXIF orientation is applied (a phone's portrait JPEG is stored sideways with a tag that says so):
  pixels, and the sizes that boxes and joints are checked against, are those of the DISPLAYED image;
  an annotation's stated width and height must be the displayed ones (``check_stated_size``).
- Transparency (RGBA, LA, palette or RGB/L images with a transparent colour) is composited onto a
  white background, as a page shows it (a black picture drawn in the alpha channel stays visible). An
  image that compositing would leave one flat colour while its alpha channel varies (a white picture
  drawn only in the alpha channel) is refused, naming the file.
- 16-bit and float images are scaled from their true range (see ``eight_bit``).
- An image of more than ``PixelLimit.pixels`` pixels is refused before it is decoded, naming the file,
  its size, the limit and the option that raises it (PIL's own decompression-bomb check is replaced by
  this one).
- Folders: ``images_in`` lists the images of a folder and says what it skipped (other file types,
  sub-folders), so a dataset never changes in silence. Hidden entries (``.DS_Store``) are never data.
- Text files (lists, annotations) are read by ``sfda.data.text_files``.
"""

from __future__ import annotations

import sys
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


class PixelLimit(NamedTuple):
    """The most pixels an image may have, and the recipe option that raises it (None: no option)."""

    pixels: int = 178_956_970  # PIL's decompression-bomb limit (2 x Image.MAX_IMAGE_PIXELS)
    option: str | None = None


DEFAULT_LIMIT = PixelLimit()
_said: set[str] = set()


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
    and the visible entries left out (other file types; sub-folders when not ``recursive``). Skipped
    entries are announced with ``note``, naming ``what`` the folder is, the count and an example."""
    if recursive:
        entries = [p for p in folder.rglob("*") if p.is_file() and not hidden_below(p, folder)]
    else:
        entries = [p for p in folder.iterdir() if visible(p)]
    images = sorted(p for p in entries if p.is_file() and is_image_name(p))
    skipped = sorted(p for p in entries if not (p.is_file() and is_image_name(p)))
    if skipped:
        note(f"{what}: skipped {len(skipped)} entries of {folder} that are not images "
             f"({', '.join(sorted(IMAGE_SUFFIXES))}) {'' if recursive else 'or are sub-folders '}"
             f"and read {len(images)} images; e.g. '{skipped[0].name}'")
    return images, skipped


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
    messages). A missing or unreadable file raises naming it."""
    from PIL import Image, UnidentifiedImageError

    with pixel_check_off():
        try:
            img = Image.open(path)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{path}: image file not found ({where})") from err
        except (UnidentifiedImageError, OSError) as err:
            raise OSError(f"{path}: corrupt or unreadable image ({where}): {err}") from err
        with img:
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
    if img.mode in ALPHA_MODES or (img.mode in ("P", "L", "RGB") and "transparency" in img.info):
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
    return np.round(values * (255.0 / top)).astype(np.uint8)


def opaque(img, path) -> np.ndarray:
    """A transparent image composited onto white (grey images stay grey); refused when its picture is
    only in the alpha channel (flat colour, varying alpha), which compositing would not keep."""
    grey = img.mode in ("LA", "La", "L")
    pixels = np.asarray(img.convert("LA" if grey else "RGBA"), dtype=np.float64)
    colour, alpha = pixels[..., :-1], pixels[..., -1:] / 255.0
    shown = np.round(colour * alpha + BACKGROUND * (1.0 - alpha)).astype(np.uint8)
    if np.ptp(shown) == 0 and np.ptp(alpha) > 0:
        raise ValueError(f"{path}: the picture is only in the alpha channel (colour is one flat value, "
                         f"alpha varies from {alpha.min():.2f} to {alpha.max():.2f}); transparent images "
                         "are composited onto white, which would leave one flat colour: save the picture "
                         "in the colour channels (e.g. as a grey image of the alpha)")
    return shown[..., 0] if grey else shown
