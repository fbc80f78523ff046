"""The bad-input catalogue, images as the file says (issue 27): EXIF orientation in every reader
(classification, detection boxes and tiles, pose joints), transparency, skipped files and nested folders,
and list files or images given in the wrong place. Each case asserts the exit status or the error, that
the message names the file or field and the expected value, and that the user's files are unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kits.bad_input import (
    assert_refused,
    folder_data,
    shot_recipe,
    snapshot,
)
from kits.turned import STORED, displayed, save_turned
from PIL import Image

from sfda.data import DetectionDataModule, ImageFolderDataModule, PoseDataModule
from sfda.data.datasets import ImageDataset
from sfda.data.image_files import read_image
from sfda.data.transforms import InputSpec

CLASSES = [str(i) for i in range(10)]


# --- 1. EXIF orientation: every reader sees the displayed image ------------------------------------
@pytest.mark.parametrize("orientation", sorted(STORED))
def test_every_exif_orientation_reads_as_the_displayed_image(tmp_path, orientation):
    picture = displayed()
    path = save_turned(tmp_path / "photo.png", picture, orientation)
    assert not np.array_equal(np.asarray(Image.open(path).convert("RGB")), picture)  # stored turned
    assert np.array_equal(read_image(path, 0), picture)


def test_a_phone_jpeg_reads_upright_in_classification(tmp_path):
    picture = displayed(32, 48)
    save_turned(tmp_path / "phone.jpg", picture, 6, quality=98)
    Image.fromarray(picture).save(tmp_path / "upright.jpg", quality=98)
    spec = InputSpec(size=16, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    dataset = ImageDataset([tmp_path / "phone.jpg", tmp_path / "upright.jpg"], None, spec)
    assert dataset.load(0).shape == (32, 48, 3)
    assert (dataset[0]["image"] - dataset[1]["image"]).abs().mean() < 0.1
    assert Image.open(tmp_path / "phone.jpg").size == (32, 48)  # stored sideways: 32 wide, 48 high


def box_csv(root: Path, image: str, box: tuple[int, int, int, int]) -> Path:
    path = root / "boxes.csv"
    path.write_text("image_path,xmin,ymin,xmax,ymax,label\n" + f"{image}," + ",".join(map(str, box)) + ",0\n")
    return path


# --- 2. transparency: composited onto white; a picture only in the alpha channel is refused ----------
def glyph() -> np.ndarray:
    alpha = np.zeros((28, 28), np.uint8)
    alpha[6:22, 12:16] = 255
    alpha[6:10, 8:20] = 128
    return alpha


def test_a_black_picture_drawn_in_alpha_is_composited_onto_white(tmp_path):
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = glyph()
    Image.fromarray(rgba, "RGBA").save(tmp_path / "icon.png")
    expected = np.round(255 * (1 - glyph() / 255.0)).astype(np.uint8)
    assert np.array_equal(read_image(tmp_path / "icon.png", 0), np.repeat(expected[..., None], 3, axis=2))


def test_a_grey_image_with_alpha_stays_grey_and_is_composited(tmp_path):
    la = np.stack([np.full((28, 28), 40, np.uint8), glyph()], axis=-1)
    Image.fromarray(la, "LA").save(tmp_path / "grey.png")
    image = read_image(tmp_path / "grey.png", 0)
    assert image.shape == (28, 28)
    assert image[0, 0] == 255 and image[12, 13] == 40
    assert image[7, 9] == round(40 * 128 / 255 + 255 * 127 / 255)  # half transparent: half way to white


def test_a_palette_image_with_a_transparent_colour_shows_white_there(tmp_path):
    indices = (glyph() > 0).astype(np.uint8)
    palette = Image.fromarray(indices, "P")
    palette.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    palette.save(tmp_path / "palette.png", transparency=0)
    image = read_image(tmp_path / "palette.png", 0)
    assert tuple(image[0, 0]) == (255, 255, 255) and tuple(image[12, 13]) == (200, 30, 30)


def test_an_rgb_image_with_a_transparent_colour_key_shows_white_there(tmp_path):
    Image.fromarray(displayed()).save(tmp_path / "keyed.png", transparency=(255, 255, 255))
    Image.fromarray(displayed()).save(tmp_path / "black_keyed.png", transparency=(0, 0, 0))
    assert np.array_equal(read_image(tmp_path / "keyed.png", 0), displayed())  # white keyed: unchanged
    image, expected = read_image(tmp_path / "black_keyed.png", 0), displayed()
    expected[(expected == 0).all(axis=-1)] = 255
    assert (displayed() == 0).all(axis=-1).any() and np.array_equal(image, expected)


def test_an_opaque_rgba_image_reads_as_its_colours(tmp_path):
    rgba = np.concatenate([displayed(), np.full((24, 40, 1), 255, np.uint8)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "opaque.png")
    assert np.array_equal(read_image(tmp_path / "opaque.png", 0), displayed())


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_a_white_picture_only_in_the_alpha_channel_is_refused_naming_the_file(workspace, mode):
    channels = np.full((28, 28, len(mode)), 255, np.uint8)
    channels[..., -1] = glyph()
    Image.fromarray(channels, mode).save(workspace / "target" / "4" / "alpha.png")
    assert_refused(["fit", "--config", shot_recipe(workspace)], workspace, "alpha.png",
                   "the picture is only in the alpha channel", "composited onto white")


@pytest.mark.parametrize("name", ["target/0/0.png", "photo"])
def test_a_single_image_given_as_the_data_is_refused(workspace, name):
    if name == "photo":
        (workspace / "photo").write_bytes((workspace / "target" / "0" / "0.png").read_bytes())
    data = folder_data(workspace / name)
    assert_refused(["fit", "--config", shot_recipe(workspace, data=data)], workspace, "data.train:",
                   f"{Path(name).name}' is a single image file",
                   "expected an image folder or a text list file")


@pytest.mark.parametrize("module, field", [(DetectionDataModule, "train"), (PoseDataModule, "eval")])
def test_a_single_image_given_as_an_annotation_file_is_refused_naming_the_field(tmp_path, module, field):
    Image.fromarray(displayed()).save(tmp_path / "a.png")
    (tmp_path / "people.json").write_text("{}")
    given = {"train": [str(tmp_path / "people.json")], field: [str(tmp_path / "a.png")]}
    with pytest.raises(ValueError) as err:
        module(**given)
    assert f"data.{field}: '{tmp_path / 'a.png'}' is a single image file; expected annotation files" in str(
        err.value
    )


def test_a_huge_image_names_the_file_the_limit_and_the_fix(workspace):
    Image.new("1", (14000, 14000)).save(workspace / "target" / "5" / "huge.png")
    assert_refused(["fit", "--config", shot_recipe(workspace)], workspace, "huge.png",
                   "too large to decode safely", "14000x14000 = 196,000,000 pixels",
                   "more than the limit of 178,956,970", "shrink or split the image")


def test_a_huge_aerial_image_tiled_anyway_names_the_file_and_data_max_image_pixels(tmp_path):
    Image.new("1", (14000, 14000)).save(tmp_path / "aerial.png")
    csv = box_csv(tmp_path, "aerial.png", (100, 100, 200, 200))
    spec = InputSpec(size=32, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    module = DetectionDataModule([str(csv)], class_names=["0"], input=spec, tile_size=2000,
                                 tile_overlap=0.0)
    module.setup()  # boxes and tiles need only the header
    assert len(module.splits["train"]) == 49
    with pytest.raises(OSError) as err:
        module.dataset("train")[0]
    assert f"{tmp_path / 'aerial.png'}: image too large to decode safely" in str(err.value)
    assert "more than the limit of 178,956,970; raise data.max_image_pixels" in str(err.value)


def test_a_large_tiled_image_names_data_max_image_pixels_which_raises_the_limit(tmp_path):
    Image.fromarray(displayed(40, 50)).save(tmp_path / "aerial.png")
    csv = box_csv(tmp_path, "aerial.png", (2, 2, 20, 20))
    spec = InputSpec(size=32, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    before = snapshot(tmp_path)
    small = DetectionDataModule([str(csv)], class_names=["0"], input=spec, tile_size=25,
                                max_image_pixels=1000)
    small.setup()
    with pytest.raises(OSError) as err:
        small.dataset("train")[0]
    assert "aerial.png: image too large to decode safely" in str(err.value)
    assert "50x40 = 2,000 pixels, more than the limit of 1,000" in str(err.value)
    assert "raise data.max_image_pixels" in str(err.value)
    raised = DetectionDataModule([str(csv)], class_names=["0"], input=spec, tile_size=25,
                                 max_image_pixels=2000)
    raised.setup()
    assert raised.dataset("train")[0]["image"].shape == (3, 32, 32)
    assert snapshot(tmp_path) == before


def test_max_image_pixels_must_be_positive(tmp_path):
    with pytest.raises(ValueError) as err:
        DetectionDataModule([str(tmp_path / "x.csv")], max_image_pixels=0)
    assert "data.max_image_pixels: expected an integer >= 1, got 0" in str(err.value)


# --- 5. issue 27 review: pictures lost by compositing, 16-bit transparent colour, multi-page TIFFs,
# broken links, class folders that are one folder, files beside class folders ------------------------
def lost_in_alpha() -> np.ndarray:
    """A picture drawn only in alpha over near-white colour 250: composited it reads 250..255."""
    rgba = np.full((28, 28, 4), 250, np.uint8)
    rgba[..., 3] = glyph()
    return rgba


def lost_in_colour() -> np.ndarray:
    """A picture in the colour channels of pixels that are all fully transparent: composited, flat white."""
    rgba = np.zeros((24, 40, 4), np.uint8)
    rgba[..., :3] = displayed()
    return rgba


@pytest.mark.parametrize(
    "make, needle",
    [(lost_in_alpha, "the picture is only in the alpha channel"),
     (lost_in_colour, "the picture is in transparent pixels")],
)
def test_a_picture_that_compositing_would_lose_is_refused_naming_the_file(tmp_path, make, needle):
    Image.fromarray(make(), "RGBA").save(tmp_path / "lost.png")
    with pytest.raises(ValueError) as err:
        read_image(tmp_path / "lost.png", 3)
    assert str(err.value).startswith(f"{tmp_path / 'lost.png'}: {needle}")
    assert "composited onto white" in str(err.value) and "save the picture in the colour channels" in str(
        err.value
    )


def test_a_picture_lost_by_compositing_is_refused_in_detection_too(tmp_path):
    Image.fromarray(lost_in_alpha(), "RGBA").save(tmp_path / "lost.png")
    spec = InputSpec(size=32, channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    module = DetectionDataModule([str(box_csv(tmp_path, "lost.png", (2, 2, 20, 20)))], class_names=["0"],
                                 input=spec)
    module.setup()
    with pytest.raises(ValueError) as err:
        module.dataset("train")[0]
    assert "lost.png: the picture is only in the alpha channel" in str(err.value)


def test_ordinary_transparent_and_low_contrast_images_are_read(tmp_path):
    logo = np.zeros((24, 40, 4), np.uint8)  # a dark logo on a transparent background
    logo[..., :3], logo[..., 3] = 30, 0
    logo[4:20, 8:30, 3] = 255
    faint = np.full((24, 40, 4), 255, np.uint8)  # an opaque, low-contrast scan: 100..104
    faint[..., :3] = 100 + (np.arange(40) % 5)[None, :, None]
    faded = faint.copy()  # the same scan, half transparent everywhere
    faded[..., 3] = 128
    for name, pixels in {"logo": logo, "faint": faint, "faded": faded}.items():
        Image.fromarray(pixels, "RGBA").save(tmp_path / f"{name}.png")
    assert read_image(tmp_path / "logo.png", 0)[0, 0].tolist() == [255] * 3
    assert read_image(tmp_path / "logo.png", 0)[10, 10].tolist() == [30] * 3
    assert np.ptp(read_image(tmp_path / "faint.png", 0)) == 4
    assert np.ptp(read_image(tmp_path / "faded.png", 0)) == 2  # faint, but what its colours span


def test_a_16_bit_grey_png_with_a_transparent_colour_is_composited(tmp_path):
    values = (np.arange(28 * 28).reshape(28, 28) * 80).astype(np.uint16)
    values[:4] = 0
    Image.fromarray(values).save(tmp_path / "deep.png", transparency=0)
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    image = read_image(tmp_path / "deep.png", 0)
    expected = np.round(values * (255 / 65535)).astype(np.uint8)
    expected[:4] = 255  # the transparent colour shows white, as in 8-bit images
    assert image.shape == (28, 28) and np.array_equal(image, expected)


def test_a_multi_page_tiff_is_refused_naming_the_file_and_its_page_count(tmp_path):
    pages = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (0, 128, 255)]
    pages[0].save(tmp_path / "scan.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(OSError) as err:
        read_image(tmp_path / "scan.tif", 5)
    assert f"{tmp_path / 'scan.tif'}: a multi-page TIFF of 3 pages (sample index 5)" in str(err.value)
    assert "save each page as its own image" in str(err.value)
    boxes = DetectionDataModule([str(box_csv(tmp_path, "scan.tif", (1, 1, 4, 4)))], class_names=["0"])
    with pytest.raises(OSError) as err:
        boxes.setup()  # refused while the boxes are checked against the header, before any training
    assert "scan.tif: a multi-page TIFF of 3 pages" in str(err.value)


def test_a_broken_image_link_is_named_with_its_target(workspace):
    (workspace / "target" / "2" / "0.png").unlink()
    (workspace / "target" / "2" / "0.png").symlink_to(workspace / "moved.png")
    module = ImageFolderDataModule(str(workspace / "target"), class_names=CLASSES)
    with pytest.raises(FileNotFoundError) as err:
        module.load_splits()
    assert f"data.train: {workspace / 'target' / '2' / '0.png'} is a broken symbolic link: its target " \
           f"{workspace / 'moved.png'} does not exist" in str(err.value)
    assert "not images" not in str(err.value)
