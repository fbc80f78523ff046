"""Box datasets: the three annotation formats, the checks, tiles, views of one geometry, hidden
target boxes."""

import numpy as np

from sfda.data.boxes import BoxRecord
from sfda.data.tiles import tile_record, tile_windows


def test_tiles_cover_the_image_overlap_and_keep_boxes_mostly_inside():
    windows = tile_windows(1000, 700, 400, 0.1)
    xs, ys = sorted({w[0] for w in windows}), sorted({w[1] for w in windows})
    assert xs == [0, 360, 600] and ys == [0, 300]  # stride 360, the last tile flush with the edge
    record = BoxRecord("x.png", np.array([[330, 10, 370, 50], [380, 10, 420, 50]]), ["a", "b"], "x.xml")
    tiles = tile_record(record, 1000, 700, 400, 0.1, 0.5)
    first, second = tiles[0], tiles[1]  # windows (0, 0) and (360, 0)
    assert first.labels == ["a", "b"] and np.allclose(
        first.boxes[1], [380, 10, 400, 50]
    )  # clipped, half inside
    assert second.labels == ["b"] and np.allclose(second.boxes[0], [20, 10, 60, 50])  # 'a' is only 25% inside
    assert first.window == (0, 0, 400, 400)
