"""Cut large images into overlapping square tiles, with their boxes clipped, as aerial-imagery users do.

A tile keeps a box when at least ``min_visible`` of the box's area lies inside it (DeepForest keeps
boxes whose clipped area is at least half the original); the kept box is clipped to the tile and
shifted to tile coordinates.
"""

from __future__ import annotations

import numpy as np

from .boxes import BoxRecord


def tile_starts(length: int, size: int, stride: int) -> list[int]:
    """Window starts along one axis of ``length`` pixels: every ``stride``, the last flush with the end."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    return starts + [length - size]


def tile_windows(width: int, height: int, size: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """``(x0, y0, x1, y1)`` windows of ``size`` pixels overlapping by the fraction ``overlap``, row-major."""
    if not 0 <= overlap < 1:
        raise ValueError(f"data.tile_overlap: expected a fraction in [0, 1), got {overlap}")
    stride = max(1, int(round(size * (1 - overlap))))
    return [
        (x, y, min(x + size, width), min(y + size, height))
        for y in tile_starts(height, size, stride)
        for x in tile_starts(width, size, stride)
    ]


def clip_boxes(
    boxes: np.ndarray, window: tuple[int, int, int, int], min_visible: float
) -> tuple[np.ndarray, np.ndarray]:
    """``boxes (N, 4)`` of the full image -> (kept boxes in window coordinates ``(M, 4)``, kept mask
    ``(N,)``)."""
    x0, y0, x1, y1 = window
    clipped = (
        np.stack(
            [
                boxes[:, 0].clip(x0, x1),
                boxes[:, 1].clip(y0, y1),
                boxes[:, 2].clip(x0, x1),
                boxes[:, 3].clip(y0, y1),
            ],
            axis=1,
        )
        if len(boxes)
        else boxes
    )
    area = lambda b: (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)  # noqa: E731
    keep = area(clipped) >= min_visible * area(boxes) if len(boxes) else np.zeros(0, dtype=bool)
    keep &= area(clipped) > 0 if len(boxes) else keep
    return clipped[keep] - np.array([x0, y0, x0, y0], dtype=np.float32), keep


def tile_record(
    record: BoxRecord, width: int, height: int, size: int, overlap: float, min_visible: float
) -> list[BoxRecord]:
    """The tiles of one image (the record itself when it fits in one tile)."""
    if width <= size and height <= size:
        return [record]
    tiles = []
    for window in tile_windows(width, height, size, overlap):
        boxes, keep = clip_boxes(record.boxes, window, min_visible)
        labels = [label for label, k in zip(record.labels, keep, strict=True) if k]
        tiles.append(
            BoxRecord(record.image, boxes, labels, record.annotation, window, record.difficult[keep],
                      record.crowd[keep])
        )
    return tiles
