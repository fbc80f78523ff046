"""The bad-input catalogue, images as the file says (issue 27): EXIF orientation in every reader
(classification, detection boxes and tiles, pose joints), transparency, skipped files and nested folders,
and list files or images given in the wrong place. Each case asserts the exit status or the error, that
the message names the file or field and the expected value, and that the user's files are unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from kits.bad_input import (
    assert_refused,
    digit_images,
    folder_data,
    shot_recipe,
)
from PIL import Image

from sfda.data import ImageFolderDataModule, InputSpec

CLASSES = [str(i) for i in range(10)]


# --- 3. skipped files and nested folders never change the dataset in silence -----------------------
def test_a_folder_inside_a_class_folder_is_refused_unless_asked(workspace):
    (workspace / "target" / "3" / "backup").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(workspace / "target" / "3" / "backup" / "old.png")
    assert_refused(["fit", "--config", shot_recipe(workspace)], workspace, "data.train: class folder",
                   "holds the folder 'backup'", "data.nested_folders: true")
    module = ImageFolderDataModule(str(workspace / "target"), class_names=CLASSES, nested_folders=True)
    module.load_splits()
    paths, labels = module.splits["train"]
    old = workspace / "target" / "3" / "backup" / "old.png"
    assert len(paths) == 41 and labels[paths.index(old)] == 3


def test_a_class_whose_files_are_all_skipped_is_refused_not_dropped(workspace):
    for path in (workspace / "target" / "7").iterdir():
        Image.open(path).save(path.with_suffix(".gif"))
        path.unlink()
    assert_refused(["fit", "--config", shot_recipe(workspace)], workspace, "data.train: class folder",
                   "class '7' would vanish", "expected images (.bmp, .jpeg, .jpg, .png")


def test_skipped_files_are_announced_with_their_count_and_an_example(workspace, capsys):
    (workspace / "target" / "2" / "notes.txt").write_text("taken on a Tuesday")
    (workspace / "target" / "2" / "scan.gif").write_bytes(b"GIF89a")
    (workspace / "target" / "2" / ".DS_Store").write_bytes(b"\0")
    module = ImageFolderDataModule(str(workspace / "target"), class_names=CLASSES)
    module.load_splits()
    err = capsys.readouterr().err
    assert len(module.splits["train"][0]) == 40
    assert "sfda: note: data.train: skipped 2 entries" in err and "'notes.txt'" in err
    assert "read 4 images" in err and ".DS_Store" not in err


def test_an_empty_class_folder_is_announced(workspace, capsys):
    for path in (workspace / "target" / "6").iterdir():
        path.unlink()
    module = ImageFolderDataModule(str(workspace / "target"), class_names=CLASSES)
    module.load_splits()
    assert 6 not in module.splits["train"][1] and len(module.splits["train"][0]) == 36
    err = capsys.readouterr().err
    assert f"class folder {workspace / 'target' / '6'} is empty: class '6' has no images" in err


def test_images_beside_class_folders_are_refused(workspace):
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(workspace / "target" / "stray.png")
    assert_refused(["fit", "--config", shot_recipe(workspace)], workspace, "data.train: 1 images lie in",
                   "'stray.png'", "expected every image inside a class folder")


def test_a_flat_target_folder_announces_what_it_skipped(tmp_path, capsys):
    digit_images(tmp_path, ["flat"])
    (tmp_path / "flat" / "labels.csv").write_text("a,b\n")
    module = ImageFolderDataModule(str(tmp_path / "flat"), class_names=CLASSES)
    module.load_splits()
    assert len(module.splits["train"][0]) == 4
    assert "skipped 1 entries" in capsys.readouterr().err


# --- 4. list files and images in the wrong place; images too large to decode -----------------------
def listing(workspace: Path) -> str:
    return "".join(f"target/{c}/{i}.png {c}\n" for c in CLASSES[:3] for i in range(4))


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig", "utf-32"])
def test_a_list_file_with_a_byte_order_mark_is_read(workspace, encoding):
    (workspace / "list.txt").write_text(listing(workspace), encoding=encoding)
    module = ImageFolderDataModule(str(workspace / "list.txt"), class_names=CLASSES)
    module.load_splits()
    assert module.splits["train"][1] == [c for c in range(3) for _ in range(4)]


@pytest.mark.parametrize(
    "text, encoding, needle",
    [
        ("target/0/0.png 0\n", "utf-16-le", "holds NUL bytes, so it is not UTF-8 text (UTF-16 without a"),
        ("target/0/0.png café\n", "utf-16-be", "holds NUL bytes, so it is not UTF-8 text (UTF-16 without a"),
        ("target/0/0.png café\n", "latin-1", "is not UTF-8 text (byte 18: invalid continuation byte)"),
        ("target/0/0.png café\n", "cp1252", "is not UTF-8 text"),
    ],
)
def test_a_list_file_in_another_encoding_is_refused_naming_the_field(workspace, text, encoding, needle):
    (workspace / "list.txt").write_text(text, encoding=encoding)
    data = folder_data(workspace / "list.txt")
    assert_refused(["fit", "--config", shot_recipe(workspace, data=data)], workspace, "data.train:",
                   "list.txt", needle, "expected an image folder or a text list file", "saved as UTF-8")


@pytest.mark.parametrize("real", ["9", "9_real"])
def test_class_folders_that_are_one_folder_are_refused_naming_both(workspace, real):
    """``9 -> 8`` (another class), or ``9 -> 9_real`` beside ``9_real``: the images would get two labels."""
    target = workspace / "target"
    if real == "9":
        for path in (target / "9").iterdir():
            path.unlink()
        (target / "9").rmdir()
        (target / "9").symlink_to(target / "8")
        other = "8"
    else:
        (target / "9").rename(target / "9_real")
        (target / "9").symlink_to(target / "9_real")
        other = "9_real"
    module = ImageFolderDataModule(str(target), class_names=[*CLASSES, "9_real"])
    with pytest.raises(ValueError) as err:
        module.load_splits()
    assert f"data.train: class folders '{min(other, '9')}' and '{max(other, '9')}'" in str(err.value)
    assert "are the same folder" in str(err.value) and "expected one folder per class" in str(err.value)


def test_an_image_link_is_read_as_its_target_but_not_under_a_second_label(workspace):
    target = workspace / "target"
    (target / "3" / "0.png").rename(workspace / "kept.png")
    (target / "3" / "0.png").symlink_to(workspace / "kept.png")
    module = ImageFolderDataModule(str(target), class_names=CLASSES)
    module.load_splits()
    assert len(module.splits["train"][0]) == 40
    (target / "4" / "linked.png").symlink_to(target / "3" / "1.png")
    with pytest.raises(ValueError) as err:
        ImageFolderDataModule(str(target), class_names=CLASSES).load_splits()
    assert f"data.train: {target / '3' / '1.png'} and {target / '4' / 'linked.png'} are the same image file" \
        in str(err.value)
    assert "under the labels of both folders" in str(err.value)
    (target / "4" / "linked.png").unlink()  # a hard link is one file too
    os.link(target / "3" / "1.png", target / "4" / "hard.png")
    with pytest.raises(ValueError, match="are the same image file"):
        ImageFolderDataModule(str(target), class_names=CLASSES).load_splits()


def test_a_folder_given_for_every_split_is_read_and_held_once(workspace, monkeypatch):
    """``sfda test`` on one folder (train, val and test all that folder) lists it once and the three
    splits share one compact table of paths, not three lists of Path objects."""
    import sfda.data.folder as folder

    calls = []
    read = folder.read_image_source
    monkeypatch.setattr(folder, "read_image_source", lambda *a, **k: calls.append(a[0]) or read(*a, **k))
    module = ImageFolderDataModule(str(workspace / "target"), class_names=CLASSES)
    module.load_splits()
    assert calls == [str(workspace / "target")]
    train, val, test = (module.splits[s][0] for s in ("train", "val", "test"))
    assert train is val is test and isinstance(train[0], Path) and len(train) == 40
    assert train[0].is_file() and train[0].parent.parent == workspace / "target"


def test_path_table_gives_back_every_path_and_subsets():
    from sfda.data.image_files import PathTable

    paths = ["/a/b/0.png", "/a/b/ünïcode 1.png", "relative/2.jpg", "/x/" + "long" * 100 + ".png"]
    table = PathTable(Path(p) for p in paths)
    assert len(table) == 4 and [str(p) for p in table] == paths and table[-1] == Path(paths[-1])
    assert table == paths and table != paths[:3]
    assert list(map(str, table[np.array([3, 0])])) == [paths[3], paths[0]]
    assert list(map(str, table[1:3])) == paths[1:3]
    with pytest.raises(IndexError, match="out of range"):
        table[4]


@pytest.mark.parametrize("name", ["notes.txt", "9b"])
def test_a_file_beside_the_class_folders_is_announced(workspace, capsys, name):
    (workspace / "target" / name).write_text("not a class")
    module = ImageFolderDataModule(str(workspace / "target"), class_names=CLASSES)
    module.load_splits()
    assert len(module.splits["train"][0]) == 40
    err = capsys.readouterr().err
    root = workspace / "target"
    assert f"sfda: note: data.train: skipped 1 files of {root} beside its class folders" in err
    assert f"e.g. '{name}'" in err


def test_a_link_to_a_folder_inside_a_class_folder_is_announced_when_nested(workspace, capsys):
    (workspace / "target" / "3" / "more").symlink_to(workspace / "target" / "4")
    module = ImageFolderDataModule(str(workspace / "target"), class_names=CLASSES, nested_folders=True)
    module.load_splits()
    assert len(module.splits["train"][0]) == 40
    err = capsys.readouterr().err
    assert "skipped 1 entries" in err and "or are links to folders" in err and "'more'" in err


def test_image_folder_list_file_and_bad_input(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((10, 10, 3), 40 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    dm = ImageFolderDataModule(str(tmp_path), input=InputSpec(size=16), batch_size=2)
    dm.setup()
    assert dm.class_names == ["cat", "dog"] and len(dm.splits["train"][0]) == 6
    assert dm.dataset("train")[0]["image"].shape == (3, 16, 16)

    listing = tmp_path / "list.txt"
    listing.write_text("cat/0.png 0\ndog/1.png dog\n")
    dm = ImageFolderDataModule(str(listing), class_names=["cat", "dog"], input=InputSpec(size=16))
    dm.setup()
    assert dm.reveal_labels([0, 1]).tolist() == [0, 1]

    (tmp_path / "bad.txt").write_text("cat/0.png 7\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: label 7 outside"):
        ImageFolderDataModule(str(tmp_path / "bad.txt"), class_names=["cat", "dog"],
                              input=InputSpec(size=16)).setup()
    with pytest.raises(FileNotFoundError, match="data.train: .*does not exist"):
        ImageFolderDataModule(str(tmp_path / "missing"), input=InputSpec(size=16)).setup()

    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
    dm = ImageFolderDataModule(str(tmp_path), input=InputSpec(size=16))
    dm.setup()
    broken = [i for i, p in enumerate(dm.splits["train"][0]) if p.name == "broken.png"][0]
    with pytest.raises(OSError, match=r"broken.png: corrupt or unreadable image"):
        dm.dataset("train")[broken]
