"""Text files a user hands in (image lists, annotation JSON and CSV, datalists, labels files): UTF-8 (with
or without a BOM, as spreadsheets save it) or UTF-16/32 with a byte-order mark. An image, or a file that is
not such text, given where one is expected is refused naming the field, the file and what belongs there.
"""

from __future__ import annotations

from pathlib import Path

from .image_files import is_image_file

TEXT_BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def text_of(path: Path, field: str, expected: str) -> str:
    """The text of ``path`` given as ``field`` (a list or annotation file): UTF-8 (a BOM allowed) or
    UTF-16/32 with a BOM. An image, or any file that is not such text, is refused naming the field and
    ``expected`` (what belongs there)."""
    if is_image_file(path):
        raise ValueError(f"{field}: '{path}' is a single image file; expected {expected}")
    raw = path.read_bytes()
    encoding = next((name for bom, name in TEXT_BOMS if raw.startswith(bom)), "utf-8")
    saved_as = "saved as UTF-8 (or UTF-16 with a byte-order mark)"
    if encoding == "utf-8" and b"\x00" in raw:
        raise ValueError(f"{field}: '{path}' holds NUL bytes, so it is not UTF-8 text (UTF-16 without a "
                         f"byte-order mark, or a binary file); expected {expected}, {saved_as}")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        label = "UTF-8" if encoding.startswith("utf-8") else encoding.upper()
        raise ValueError(f"{field}: '{path}' is not {label} text (byte {err.start}: {err.reason}); "
                         f"expected {expected}, {saved_as}") from None
    return text.lstrip("\ufeff")
