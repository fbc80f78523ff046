"""Model-zoo architectures named in a recipe (``sfda.models.zoo``): timm and torchvision classifiers with
their head, feature and input spec from the library's own API, weights from safetensors, the trust model
(an artifact naming a zoo model needs the recipe to name the same one), and refusals that name the field."""

from __future__ import annotations

import pytest
import torch
from kits.zoo import ZOO_MODELS, zoo_weights
from safetensors.torch import save_file

from sfda.models import ArtifactError, load_source
from sfda.models.zoo import build_zoo_network

NAMES = [str(i) for i in range(10)]


def source(tmp_path, name: str, **fields) -> dict:
    architecture, kwargs = ZOO_MODELS[name]
    weights = zoo_weights(tmp_path / f"{name}.safetensors", architecture, kwargs)
    return {"architecture": architecture, "weights": str(weights), "kwargs": kwargs, "class_names": NAMES,
            **fields}


@pytest.mark.parametrize("name, head", [("timm-resnet", "fc"), ("timm-vit", "head"),
                                        ("timm-efficientnet", "classifier"), ("torchvision-resnet", "fc")])
def test_a_zoo_classifier_is_adapted_through_its_librarys_head_and_pre_logits_feature(tmp_path, name, head):
    artifact = load_source(source(tmp_path, name))
    assert artifact.task == "classification" and artifact.head_layer == head and artifact.feature_layer == ""
    classifier = artifact.build().eval()
    reference = build_zoo_network(*ZOO_MODELS[name]).eval()
    reference.load_state_dict(artifact.state_dict)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features, logits = classifier(images)
        assert torch.allclose(logits, reference(images), atol=1e-5)
        if name.startswith("timm"):  # the feature is timm's own pre-logits output
            expected = reference.forward_head(reference.forward_features(images), pre_logits=True)
            assert torch.allclose(features, expected, atol=1e-5)
        else:
            assert features.shape == (2, reference.fc.in_features)
    assert classifier.head is classifier.network.get_submodule(head)


def test_the_input_spec_defaults_to_the_librarys_record(tmp_path):
    resnet = load_source(source(tmp_path, "timm-resnet")).input
    assert (resnet.size, resnet.mean, resnet.std) == (224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert load_source(source(tmp_path, "timm-vit")).input.size == 32  # its img_size, not the cfg's 224
    assert load_source(source(tmp_path, "torchvision-resnet")).input.size == 224  # weights' crop size
    given = {"size": 48, "channels": 3, "mean": [0.5] * 3, "std": [0.5] * 3}
    assert load_source(source(tmp_path, "timm-resnet", input=given)).input.size == 48


def test_weights_of_another_shape_are_refused_with_the_first_differing_keys(tmp_path):
    wrong = build_zoo_network("timm:resnet10t", {"num_classes": 4})
    save_file(wrong.state_dict(), str(tmp_path / "wrong.safetensors"))
    with pytest.raises(ArtifactError) as refused:
        load_source(source(tmp_path, "timm-resnet", weights=str(tmp_path / "wrong.safetensors")))
    message = str(refused.value)
    assert "wrong.safetensors" in message and "timm:resnet10t" in message
    assert "fc.weight (4, 512) (expected (10, 512))" in message


def test_weights_saved_from_a_wrapped_model_are_refused_naming_the_prefix(tmp_path):
    network = build_zoo_network("timm:resnet10t", {"num_classes": 10})
    save_file({f"module.{k}": v for k, v in network.state_dict().items()}, str(tmp_path / "ddp.safetensors"))
    with pytest.raises(ArtifactError, match="the file's keys carry the prefix 'module.' \\(a DataParallel"):
        load_source(source(tmp_path, "timm-resnet", weights=str(tmp_path / "ddp.safetensors")))


def test_a_grey_timm_model_gets_one_channel_statistics(tmp_path):
    grey = load_source(source(tmp_path, "timm-resnet", kwargs={"num_classes": 10, "in_chans": 1},
                              weights=str(zoo_weights(tmp_path / "grey.safetensors", "timm:resnet10t",
                                                      {"num_classes": 10, "in_chans": 1})))).input
    assert grey.channels == 1 and grey.mean == pytest.approx((0.449,)) and grey.std == pytest.approx((0.226,))


def test_a_checkpoint_holding_a_state_dict_is_refused_with_what_to_save(tmp_path):
    network = build_zoo_network("timm:resnet10t", {"num_classes": 10})
    torch.save({"state_dict": network.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pth")
    with pytest.raises(ArtifactError, match="it holds mappings under \\['state_dict'\\]"):
        load_source(source(tmp_path, "timm-resnet", weights=str(tmp_path / "checkpoint.pth")))
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match="broken.safetensors: not a readable safetensors file"):
        load_source(source(tmp_path, "timm-resnet", weights=str(tmp_path / "broken.safetensors")))


@pytest.mark.parametrize("fields, needle", [
    ({"architecture": "timm:resnet_10t"}, "no model 'resnet_10t'; did you mean"),
    ({"architecture": "torchvision.models:resnet_18"}, "no model 'resnet_18'; did you mean"),
    ({"kwargs": {"num_classes": 10, "pretrained": True}}, "model.source.kwargs.pretrained = True"),
    ({"task": "detection"}, "'timm:resnet10t' is a classification model, but task is 'detection'"),
    ({"architecture": "torchvision.models.detection:retinanet_resnet50_fpn"},
     "expected one of ['fasterrcnn_resnet50_fpn'"),
])
def test_zoo_fields_that_cannot_build_the_model_are_named(tmp_path, fields, needle):
    with pytest.raises(ArtifactError) as refused:
        load_source(source(tmp_path, "timm-resnet", **fields))
    assert needle in str(refused.value)


def test_an_artifact_naming_a_zoo_model_needs_the_recipe_to_name_the_same_one(tmp_path):
    artifact = load_source(source(tmp_path, "timm-resnet"))
    artifact.save(tmp_path / "zoo.pt")
    with pytest.raises(ArtifactError, match="the artifact names architecture 'timm:resnet10t', which sfda "
                                            "does not build"):
        load_source(str(tmp_path / "zoo.pt"))
    with pytest.raises(ArtifactError, match="the recipe trusts model.source.architecture = 'timm:resnet18'"):
        load_source({"path": str(tmp_path / "zoo.pt"), "architecture": "timm:resnet18"})
    trusted = load_source({"path": str(tmp_path / "zoo.pt"), "architecture": "timm:resnet10t"})
    assert trusted.head_layer == "fc" and trusted.input == artifact.input


def test_a_torchvision_detector_named_by_builder_is_a_detection_source(tmp_path):
    kwargs = {"num_classes": 3, "min_size": 320, "max_size": 320}
    builder = "torchvision.models.detection:fasterrcnn_mobilenet_v3_large_320_fpn"
    network = build_zoo_network(builder, kwargs)
    save_file(network.state_dict(), str(tmp_path / "detector.safetensors"))
    artifact = load_source({"architecture": builder,
                            "weights": str(tmp_path / "detector.safetensors"), "kwargs": kwargs,
                            "class_names": ["car", "person"]})
    assert artifact.task == "detection"
    assert artifact.input.size == 320 and artifact.input.mean == (0.485, 0.456, 0.406)  # its transform's
