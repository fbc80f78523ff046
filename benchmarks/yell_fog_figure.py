"""The before/after figure of the YELL fog benchmark (REAL IMAGES, SYNTHETIC FOG) and its generator's
time and mean transmission.

    python benchmarks/yell_fog_figure.py        # writes docs/assets/yell_fog.png, prints the numbers

Panels: clean crop 2 | crop 2 under the default fog (whole crop, downscaled) | a 400-pixel window of
each at full resolution. Quantised to 192 colours to keep the file small.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from PIL import Image

from sfda.data.benchmarks.yell_fog import SEEDS, Fog, generate, transmission
from sfda.data.fetch import data_root

OUT = Path(__file__).resolve().parents[1] / "docs" / "assets" / "yell_fog.png"
WINDOW = (900, 900, 1300, 1300)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for part in ("clean_train", "fog_train", "fog_test", "clean_test"):
            generate(Path(tmp), *part.split("_"), wheel_root=data_root())
        print(f"generator: four parts in {time.perf_counter() - start:.2f} s")
        folder = Path(tmp) / "yell_fog"
        clean, foggy = (Image.open(folder / f"{d}_train" / "image.png") for d in ("clean", "fog"))
        panels = [clean.resize((240, 258)), foggy.resize((240, 258)),
                  clean.crop(WINDOW).resize((240, 240)), foggy.crop(WINDOW).resize((240, 240))]
        figure = Image.new("RGB", (4 * 240 + 40, 258), "white")
        for i, panel in enumerate(panels):
            figure.paste(panel, (i * 250 + (10 if i > 1 else 0), 0))
        figure.quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(OUT, optimize=True)
    for split, (height, width) in (("train", (2472, 2299)), ("test", (1035, 1249))):
        t = transmission(height, width, Fog(seed=SEEDS[split]))
        print(f"crop {split}: transmission mean {t.mean():.3f}, min {t.min():.3f}, max {t.max():.3f}")


if __name__ == "__main__":
    main()
