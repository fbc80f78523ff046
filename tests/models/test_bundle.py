"""MONAI bundles as segmentation source models: read as data (metadata, a plain ``network_def``, weights
loaded with ``weights_only=True``), hostile or inconsistent bundles refused by file and key with nothing
run, and (slow) an AdaBN run of the real CLI on the Colin27 -> ITK volumes from a bundle."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import ROOT, results_of, run_sfda
from kits.bad_input import assert_refused, recipe
from kits.bundles import NAMES, NETWORK_DEF, inference, metadata, small_unet, write_bundle

from sfda.models import ArtifactError, load_source
from sfda.tasks import SegmentationTask


def refused(source: dict, *needles: str) -> str:
    with pytest.raises(ArtifactError) as caught:
        load_source(source)
    for needle in needles:
        assert needle in str(caught.value), f"{needle!r} not in: {caught.value}"
    return str(caught.value)


# --- a bundle is a segmentation source model ----
def test_a_bundle_gives_labels_input_spec_and_its_own_weights(tmp_path):
    network = small_unet(seed=3)
    folder = write_bundle(tmp_path / "bundle", network, metadata(spatial_shape=(96, 112)))
    artifact = load_source({"bundle": str(folder)})
    assert artifact.task == "segmentation"
    assert artifact.class_names == NAMES  # channel_def in channel order (written in reverse)
    spec = artifact.input  # mode and roi from spatial_shape, the rest from the preprocessing transforms
    assert (spec.mode, spec.roi, spec.channels) == ("2d", (96, 112), 1)
    assert spec.spacing == (2.0, 2.0, 2.0) and spec.intensity_percentiles == (1.0, 99.0)
    assert artifact.architecture == {"target": "monai.networks.nets:UNet",
                                     "kwargs": {k: v for k, v in NETWORK_DEF.items() if k != "_target_"}}
    built, images = artifact.build_network().eval(), torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(built(images), network.eval()(images))


def test_monai_itself_builds_the_same_network_from_the_bundle(tmp_path):
    from monai.bundle import ConfigParser

    folder = write_bundle(tmp_path / "bundle")
    parser = ConfigParser()
    parser.read_config(str(folder / "configs" / "inference.json"))
    theirs = parser.get_parsed_content("network_def")  # a benign bundle: MONAI may run it here
    ours = load_source({"bundle": str(folder)}).build_network()
    assert type(theirs) is type(ours)
    shapes = [{k: v.shape for k, v in net.state_dict().items()} for net in (theirs, ours)]
    assert shapes[0] == shapes[1]


@pytest.mark.parametrize("target", ["UNet", "monai.networks.nets.UNet"])
@pytest.mark.parametrize("wrap", ["", "model", "state_dict"])
def test_target_spellings_and_wrapped_checkpoints_are_read(tmp_path, target, wrap):
    network = small_unet(seed=1)
    config = inference({**NETWORK_DEF, "_target_": target})
    folder = write_bundle(tmp_path / "bundle", network, config=config, wrap=wrap)
    state = load_source({"bundle": str(folder)}).state_dict
    assert all(torch.equal(state[k], v) for k, v in network.state_dict().items())


def test_an_at_reference_to_a_plain_top_level_value_is_resolved(tmp_path):
    config = inference({**NETWORK_DEF, "out_channels": "@num_classes", "channels": "@widths"}, num_classes=2,
                       widths=[8, 16, 32])
    artifact = load_source({"bundle": str(write_bundle(tmp_path / "bundle", config=config))})
    assert artifact.architecture["kwargs"]["out_channels"] == 2
    assert artifact.architecture["kwargs"]["channels"] == [8, 16, 32]


def test_a_yaml_inference_config_of_another_monai_net_is_read(tmp_path):
    from monai.networks.nets import BasicUNet

    plain = {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "features": [4, 4, 8, 8, 16, 4]}
    folder = write_bundle(tmp_path / "bundle", BasicUNet(**plain))
    (folder / "configs" / "inference.json").unlink()
    config = inference({"_target_": "BasicUNet", **plain})
    (folder / "configs" / "inference.yaml").write_text(yaml.safe_dump(config))
    artifact = load_source({"bundle": str(folder)})
    assert artifact.architecture == {"target": "monai.networks.nets:BasicUNet", "kwargs": plain}
    assert isinstance(artifact.build_network(), BasicUNet)


# --- a bundle config is code to MONAI: sfda runs none of it ----
def test_a_hostile_network_def_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    config = inference({"_target_": "os.system", "command": f"touch {marker}"})
    folder = write_bundle(tmp_path / "bundle", config=config)
    refused({"bundle": str(folder)}, f"{folder}/configs/inference.json", "network_def._target_: 'os.system'",
            "never evaluates")
    assert not marker.exists()
    from monai.bundle import ConfigParser  # the same file is code to MONAI: its parser would run it

    ConfigParser(json.loads((folder / "configs" / "inference.json").read_text())).get_parsed_content(
        "network_def")
    assert marker.exists()


def test_the_cli_refuses_a_hostile_bundle_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    config = inference({"_target_": "monai.networks.nets.UNet", "spatial_dims": f"$open('{marker}', 'w')"})
    write_bundle(tmp_path / "bundle", config=config)
    model = {"class_path": "sfda.methods.AdaBN", "init_args": {"source": {"bundle": "bundle"}}}
    data = {"class_path": "sfda.data.SegmentationDataModule",
            "init_args": {"datalist": "list.json", "class_names": NAMES, "role": "target"}}
    assert_refused(["fit", "--config", str(recipe(tmp_path / "adabn.yaml", model, data))], tmp_path,
                   "bundle/configs/inference.json: network_def.spatial_dims", "is an expression")
    assert not marker.exists()


def test_expressions_elsewhere_in_the_config_are_not_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    config = inference(imports=[f"$open({str(marker)!r}, 'w').close()"])
    load_source({"bundle": str(write_bundle(tmp_path / "bundle", config=config))})
    assert not marker.exists()


@pytest.mark.parametrize(("change", "needles"), [
    ({"kernel_size": "$__import__('os').getpid() and 3"}, ["network_def.kernel_size", "is an expression"]),
    ({"strides": [2, "$2"]}, ["network_def.strides", "is an expression"]),
    ({"norm": {"_target_": "torch.nn.BatchNorm2d"}}, ["network_def.norm", "nested _target_"]),
    ({"_requires_": "$import os"}, ["network_def._requires_", "never evaluates"]),
    ({"_target_": "torch.nn.Conv2d"}, ["network_def._target_: 'torch.nn.Conv2d'", "monai.networks.nets"]),
    ({"_target_": "monai.bundle.ConfigParser"}, ["network_def._target_", "not a network class"]),
    ({"out_channels": "@out#n"}, ["network_def.out_channels", "'@out#n' is a reference"]),
    ({"channels": "%configs/other.json#channels"}, ["network_def.channels", "is a macro"]),
    ({"act": {"name": "relu"}}, ["network_def.act", "expected a plain value"]),
])
def test_network_def_other_than_a_monai_net_with_plain_arguments_is_refused(tmp_path, change, needles):
    folder = write_bundle(tmp_path / "bundle", config=inference({**NETWORK_DEF, **change}, out="$2"))
    refused({"bundle": str(folder)}, "configs/inference.json:", *needles)


def test_a_reference_to_an_expression_is_refused(tmp_path):
    config = inference({**NETWORK_DEF, "out_channels": "@classes"}, classes="$len(['a', 'b'])")
    refused({"bundle": str(write_bundle(tmp_path / "bundle", config=config))}, "network_def.out_channels",
            "'@classes' is a reference sfda does not resolve")


# --- bad bundles, refused by file and field ----
def test_a_bundle_without_network_def_is_refused(tmp_path):
    config = inference()
    del config["network_def"]
    refused({"bundle": str(write_bundle(tmp_path / "bundle", config=config))}, "configs/inference.json",
            "network_def: expected a mapping", "got missing")


@pytest.mark.parametrize("missing", ["configs/metadata.json", "models/model.pt"])
def test_a_bundle_missing_a_file_is_refused_naming_it(tmp_path, missing):
    folder = write_bundle(tmp_path / "bundle")
    (folder / missing).unlink()
    refused({"bundle": str(folder)}, f"{folder / missing}: not found")


def test_a_missing_bundle_folder_is_refused(tmp_path):
    refused({"bundle": str(tmp_path / "nowhere")}, "model.source.bundle", "nowhere")


def test_weights_of_another_network_are_refused_naming_the_weight_file(tmp_path):
    folder = write_bundle(tmp_path / "bundle", small_unet(channels=[4, 8, 16]))
    refused({"bundle": str(folder)}, f"{folder}/models/model.pt", "do not match", "shapes")


def test_a_weight_file_that_is_not_a_state_dict_is_refused(tmp_path):
    folder = write_bundle(tmp_path / "bundle")
    torch.save({"epoch": 3}, folder / "models" / "model.pt")
    refused({"bundle": str(folder)}, "models/model.pt", "expected a state dict")


def test_labels_that_disagree_with_the_network_are_refused(tmp_path):
    folder = write_bundle(tmp_path / "bundle", meta=metadata(names=["background", "brain", "skull"]))
    refused({"bundle": str(folder)}, "network_def.out_channels: 2", "implies 3")


def test_channel_def_with_a_gap_is_refused(tmp_path):
    meta = metadata()
    meta["network_data_format"]["outputs"]["pred"]["channel_def"] = {"0": "background", "2": "brain"}
    refused({"bundle": str(write_bundle(tmp_path / "bundle", meta=meta))},
            "metadata.json: network_data_format.outputs.pred.channel_def")


def test_labels_that_disagree_with_the_data_are_refused():
    artifact = SimpleNamespace(class_names=NAMES, input=None, origin="bundle", num_classes=2)
    task = SegmentationTask(NAMES, None)
    task.check_data(SimpleNamespace(class_names=list(NAMES), input_spec=None), artifact)  # agrees
    with pytest.raises(ArtifactError, match=r"data.class_names \['background', 'tumour'\] differ"):
        task.check_data(SimpleNamespace(class_names=["background", "tumour"], input_spec=None), artifact)


# --- the input spec: what the bundle states, else the recipe ----
def without_preprocessing(**top_level) -> dict:
    config = inference(**top_level)
    config["preprocessing"]["transforms"] = config["preprocessing"]["transforms"][:3]
    return config


def test_spacing_and_percentiles_the_bundle_leaves_out_come_from_the_recipe(tmp_path):
    folder = write_bundle(tmp_path / "bundle", config=without_preprocessing())
    refused({"bundle": str(folder)}, "model.source.input.spacing", "Spacingd.pixdim")
    refused({"bundle": str(folder), "input": {"spacing": [1.0, 1.0, 3.0]}},
            "model.source.input.intensity_percentiles")
    given = {"spacing": [1.0, 1.0, 3.0], "intensity_percentiles": [0.5, 99.5], "slice_axis": 1}
    spec = load_source({"bundle": str(folder), "input": given}).input
    assert (spec.spacing, spec.intensity_percentiles, spec.slice_axis) == ((1.0, 1.0, 3.0), (0.5, 99.5), 1)


def test_a_recipe_value_that_contradicts_the_bundle_is_refused(tmp_path):
    folder = write_bundle(tmp_path / "bundle")
    refused({"bundle": str(folder), "input": {"spacing": [1.0, 1.0, 1.0]}}, "model.source.input.spacing",
            "the bundle states [2.0, 2.0, 2.0]")


def test_a_patch_size_rule_needs_the_roi_from_the_recipe(tmp_path):
    folder = write_bundle(tmp_path / "bundle", meta=metadata(spatial_shape=("16*n", "16*n")))
    refused({"bundle": str(folder)}, "model.source.input.roi")
    assert load_source({"bundle": str(folder), "input": {"roi": [64, 48]}}).input.roi == (64, 48)


def test_a_3d_input_against_a_2d_network_is_refused(tmp_path):
    folder = write_bundle(tmp_path / "bundle", meta=metadata(spatial_shape=(32, 32, 32)))
    refused({"bundle": str(folder)}, "network_def.spatial_dims: 2", "implies 3")


def test_unknown_source_fields_are_refused():
    refused({"bundle": "b", "weights": "w.pt"}, "unknown fields ['weights']")
    refused({"bundle": "b", "input": {"mode": "3d"}}, "model.source.input: unknown fields ['mode']")


# --- the CLI: AdaBN from a bundle on the Colin27 -> ITK volumes ----
@pytest.mark.slow
def test_adabn_adapts_a_bundle_through_the_cli(colin_source, tmp_path):
    artifact = torch.load(colin_source, weights_only=True)
    kwargs = artifact["architecture"]["kwargs"]
    network = small_unet(**kwargs)
    network.load_state_dict(artifact["state_dict"])
    config = inference({"_target_": "UNet", **kwargs})
    meta = metadata(artifact["class_names"], artifact["input"]["roi"])
    folder = write_bundle(tmp_path / "bundle", network, meta, config, wrap="model")
    override = tmp_path / "source.yaml"
    override.write_text(yaml.safe_dump({"model": {"init_args": {"source": {"bundle": str(folder)}}}}))
    run_sfda("fit", "--config", str(ROOT / "recipes/segmentation/colin27_itk/adabn.yaml"), "--config",
             str(override), f"--trainer.default_root_dir={tmp_path / 'runs'}", "--trainer.max_epochs=1",
             "--trainer.check_val_every_n_epoch=1")
    results = results_of(tmp_path / "runs")
    assert math.isfinite(results["target/dice"]) and math.isfinite(results["source_only/dice"])
    checkpoint = torch.load(tmp_path / "runs" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["source"] == {"bundle": str(folder)}
    state = checkpoint["state_dict"]
    weight = next(k for k in artifact["state_dict"] if k.endswith("conv.weight"))
    mean = next(k for k in artifact["state_dict"] if k.endswith("running_mean"))
    # the bundle's trained weights, untouched by AdaBN; its BatchNorm statistics re-estimated on the target
    assert torch.equal(state[f"network.{weight}"], artifact["state_dict"][weight])
    assert not torch.allclose(state[f"network.{mean}"], artifact["state_dict"][mean])
