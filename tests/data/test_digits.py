"""Data layer: real digit sets, hidden target labels, the global batch sampler, user image folders."""

import numpy as np

from sfda.data import DigitsDataModule, InputSpec

SPEC = InputSpec(size=28, channels=1, mean=(0.5,), std=(0.5,))


def test_optdigits_is_real_and_centred_like_mnist():
    dm = DigitsDataModule("optdigits", role="target", input=SPEC)
    dm.setup()
    images, sealed = dm.splits["train"]
    assert images.shape[1:] == (28, 28) and len(images) + len(dm.splits["test"][0]) == 1797
    assert set(np.unique(sealed.reveal(np.arange(len(sealed))))) == set(range(10))
    assert images[:, :4].max() == 0 and images[:, 24:].max() == 0  # 20x20 box, 4-pixel border like MNIST
