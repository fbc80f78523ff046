"""Data layer: real digit sets, hidden target labels, the global batch sampler, user image folders."""

import numpy as np
import pytest
import torch
from PIL import Image

from sfda.data import DigitsDataModule, ImageFolderDataModule, InputSpec
from sfda.data.datasets import UNLABELLED, ImageDataset
from sfda.data.samplers import GlobalBatchSampler

SPEC = InputSpec(size=28, channels=1, mean=(0.5,), std=(0.5,))


def test_optdigits_is_real_and_centred_like_mnist():
    dm = DigitsDataModule("optdigits", role="target", input=SPEC)
    dm.setup()
    images, sealed = dm.splits["train"]
    assert images.shape[1:] == (28, 28) and len(images) + len(dm.splits["test"][0]) == 1797
    assert set(np.unique(sealed.reveal(np.arange(len(sealed))))) == set(range(10))
    assert images[:, :4].max() == 0 and images[:, 24:].max() == 0  # 20x20 box, 4-pixel border like MNIST


def test_target_training_data_hides_labels_and_returns_global_index():
    dm = DigitsDataModule("optdigits", role="target", input=SPEC, train_subset=100)
    dm.setup()
    item = dm.dataset("train")[7]
    assert item["label"] == UNLABELLED and item["index"] == 7 and item["image"].shape == (1, 28, 28)
    assert dm.dataset("val")[0]["label"] >= 0  # the evaluation split keeps labels for reporting
    batch = next(iter(dm.bank_dataloader()))
    assert (batch["label"] == UNLABELLED).all()


def test_source_role_holds_out_ten_percent():
    dm = DigitsDataModule("optdigits", role="source", input=SPEC)
    dm.setup()
    n_train, n_val = len(dm.splits["train"][0]), len(dm.splits["val"][0])
    assert n_val == int((n_train + n_val) * 0.1)


@pytest.mark.parametrize("world", [2, 4])
def test_global_batches_do_not_depend_on_process_count(world):
    single = list(GlobalBatchSampler(103, 8, shuffle=True, drop_last=True, seed=3))
    shards = [list(GlobalBatchSampler(103, 8, shuffle=True, drop_last=True, seed=3, rank=r, world_size=world))
              for r in range(world)]
    assert all(len(s) == len(single) for s in shards)
    for step, batch in enumerate(single):
        assert sum((s[step] for s in shards), []) == batch


def test_training_augmentation_is_seeded_per_sample_not_by_global_state():
    images = np.random.default_rng(0).integers(0, 255, (6, 28, 28), dtype=np.uint8)
    dataset = ImageDataset(images, None, InputSpec(28, 1, (0.5,), (0.5,)), view="strong")
    batches = list(GlobalBatchSampler(6, 3, shuffle=True, drop_last=True, seed=5, seeded=True))
    key = batches[0][0]
    assert isinstance(key, tuple) and key[0] in range(6)
    first = dataset[key]["image"]
    torch.manual_seed(123), np.random.seed(7)  # global state must not matter
    dataset[(key[0], key[1] + 1)]  # nor what was drawn in between
    assert torch.equal(dataset[key]["image"], first)
    assert not torch.equal(dataset[(key[0], key[1] + 1)]["image"], first)
    assert dataset[key]["index"] == key[0]
    sampler = GlobalBatchSampler(6, 3, shuffle=True, drop_last=True, seed=5, seeded=True)
    sampler.set_epoch(1)
    assert [k[1] for b in sampler for k in b] != [k[1] for b in batches for k in b]  # a new draw each epoch


def test_evaluation_sampler_covers_every_sample_once():
    shards = [list(GlobalBatchSampler(21, 8, shuffle=False, drop_last=False, rank=r, world_size=2))
              for r in range(2)]
    seen = sorted(i for s in shards for b in s for i in b)
    assert seen == list(range(21))
    lengths = [len(GlobalBatchSampler(21, 8, False, False, rank=r, world_size=2)) for r in range(2)]
    assert lengths == [len(s) for s in shards]


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


def test_input_spec_checks_channels():
    with pytest.raises(ValueError, match=r"input.mean: expected 3 values"):
        InputSpec(size=8, channels=3, mean=(0.5,), std=(0.5, 0.5, 0.5))


def test_fashion_mnist_is_fetched_from_its_debian_package():
    dm = DigitsDataModule("fashion_mnist", role="target", input=SPEC)
    dm.setup()
    (train_x, _), (test_x, test_y) = dm.splits["train"], dm.splits["test"]
    assert train_x.shape == (60000, 28, 28) and test_x.shape == (10000, 28, 28) and train_x.dtype == np.uint8
    assert np.bincount(test_y).tolist() == [1000] * 10  # the real test split is balanced
    assert dm.class_names[0] == "t-shirt" and len(dm.class_names) == 10


@pytest.mark.parametrize("uri, package",
                         [("pypi://no-such-sfda-package==0.0.1/x.bin", "no-such-sfda-package==0.0.1"),
                          ("deb://no-such-sfda-package/usr/share/x.bin", "no-such-sfda-package")])
def test_a_failed_fetch_names_the_package_and_the_manual_alternative(uri, package, tmp_path):
    from sfda.data.fetch import FetchError, resolve

    with pytest.raises(FetchError, match="Fetch it by hand") as err:
        resolve(uri, tmp_path)
    assert package in str(err.value)
    assert not any(tmp_path.rglob("x.bin"))  # nothing half-written


@pytest.mark.parametrize("spec", [InputSpec(28, 1, (0.5,), (0.5,)),
                                  InputSpec(32, 3, (0.4377, 0.4438, 0.4728), (0.198, 0.201, 0.197))])
def test_the_test_view_equals_the_albumentations_pipeline_bit_for_bit(spec):
    """``TestView`` replaces ``A.Compose([A.Resize, A.Normalize])`` for speed: same tensors, exactly."""
    import albumentations as A

    from sfda.data.transforms import build_view, to_tensor

    pipeline = A.Compose([A.Resize(spec.size, spec.size),
                          A.Normalize(mean=spec.mean, std=spec.std, max_pixel_value=255.0)])
    rng = np.random.default_rng(0)
    for shape in [(28, 28), (32, 32, 1), (20, 24, 3), (45, 40), (32, 32, 3), (7, 50, 4)]:
        image = rng.integers(0, 256, size=shape, dtype=np.uint8)
        fast = to_tensor(image, spec, build_view(spec, "test"))
        assert torch.equal(fast, to_tensor(image, spec, pipeline)), shape
    floats = rng.random((30, 30, spec.channels), dtype=np.float32)  # not uint8: the pipeline itself
    assert torch.equal(to_tensor(floats, spec, build_view(spec, "test")), to_tensor(floats, spec, pipeline))


def test_test_view_inputs_are_kept_and_reused_within_a_memory_limit():
    from sfda.data.datasets import MemoryBudget, PreparedInputs

    images = np.random.default_rng(0).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    spec = InputSpec(28, 1, (0.5,), (0.5,))
    one_image = 28 * 28 * 4
    budget = MemoryBudget(limit_bytes=4 * one_image)
    prepared = PreparedInputs(budget)
    PreparedInputs(budget).put(0, torch.zeros(1, 28, 28))  # another split's input takes its share
    first = ImageDataset(images, None, spec, view="test", prepared=prepared)
    again = ImageDataset(images, None, spec, view="test", prepared=prepared)  # another loader, same split
    items = [first[i]["image"] for i in range(6)]
    assert sorted(prepared.inputs) == [0, 1, 2] and budget.used_bytes == 4 * one_image
    assert again[1]["image"] is prepared.inputs[1]
    assert all(torch.equal(again[i]["image"], items[i]) for i in range(6))
    weak = ImageDataset(images, None, spec, view="weak", prepared=prepared)  # random views are never kept
    assert weak.prepared is None


def test_loader_workers_keep_no_test_view_inputs():
    """A worker process would keep a copy of its own, beyond the budget: only the main process keeps."""
    from torch.utils.data import DataLoader

    from sfda.data.datasets import MemoryBudget, PreparedInputs

    images = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    budget = MemoryBudget(limit_bytes=2**20)
    dataset = ImageDataset(images, None, InputSpec(28, 1, (0.5,), (0.5,)), view="test",
                           prepared=PreparedInputs(budget))
    assert len(list(DataLoader(dataset, batch_size=2, num_workers=1))) == 2
    assert budget.used_bytes == 0 and not dataset.prepared.inputs
    dataset[0]
    assert budget.used_bytes == 28 * 28 * 4
