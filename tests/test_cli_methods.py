"""End-to-end: every method through the real `sfda` CLI on real digits (small subsets)."""

import json

import pytest
import torch
from conftest import ROOT, results_of, run_sfda

from sfda.models import ArtifactError, load_artifact

METHODS = ["shot", "shot_im", "nrc", "aad", "tent"]
SMALL = ["--data.init_args.train_subset=512", "--data.init_args.eval_subset=256", "--trainer.max_epochs=1"]


@pytest.mark.slow  # a CLI subprocess run
def test_source_artifact_is_complete_and_loads_weights_only(mnist_source):
    artifact = load_artifact(mnist_source)
    assert artifact.class_names == [str(d) for d in range(10)] and artifact.input.size == 28
    payload = torch.load(mnist_source, weights_only=True)
    assert payload["format"] == "sfda-source/1"
    features, logits = artifact.build()(torch.zeros(2, 1, 28, 28))
    assert features.shape == (2, 256) and logits.shape == (2, 10)


@pytest.mark.slow  # a CLI subprocess run
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize("method", METHODS)
def test_method_adapts_and_writes_a_run_directory(method, precision, mnist_source, tmp_path):
    run_sfda("fit", "--config", str(ROOT / f"recipes/digits/mnist_optdigits/{method}.yaml"),
             f"--model.init_args.source={mnist_source}", f"--trainer.default_root_dir={tmp_path}",
             f"--trainer.precision={precision}", *SMALL)
    run = tmp_path / "version_0"
    results = results_of(tmp_path)
    for key in ("target/acc", "target/acc_per_class", "source_only/acc", "label_free/entropy",
                "label_free/im", "label_free/snd", "wall_s"):
        assert key in results and results[key] == results[key], key  # present and not NaN
    assert 0.0 <= results["target/acc"] <= 1.0
    assert (run / "config.yaml").exists() and (run / "checkpoints" / "last.ckpt").exists() \
        and (run / "metrics.csv").exists()
    info = json.loads((run / "run_info.json").read_text())
    assert info["seed"] == 0 and info["versions"]["torch"] and info["precision"] == precision


@pytest.mark.slow  # a CLI subprocess run
def test_source_only_test_and_predict_write_results(mnist_source, tmp_path):
    recipe = str(ROOT / "recipes/digits/mnist_optdigits/source_only.yaml")
    run_sfda("test", "--config", recipe, f"--model.init_args.source={mnist_source}",
             f"--trainer.default_root_dir={tmp_path}")
    # a real MNIST model on real optdigits is far above chance
    assert results_of(tmp_path)["target/acc"] > 0.3
    run_sfda("predict", "--config", recipe, f"--model.init_args.source={mnist_source}",
             f"--trainer.default_root_dir={tmp_path}")
    lines = (tmp_path / "version_1" / "predictions.csv").read_text().splitlines()
    assert lines[0] == "index,prediction,class_name,confidence" and len(lines) == 1 + 359


@pytest.mark.slow  # a CLI subprocess run
def test_unknown_recipe_key_is_named(tmp_path):
    done = run_sfda("fit", "--config", str(ROOT / "recipes/digits/mnist_optdigits/shot.yaml"),
                    "--model.init_args.betta=0.3", check=False)
    assert done.returncode != 0 and "betta" in done.stderr


@pytest.mark.slow  # a CLI subprocess run
def test_print_config_resolves_the_recipe():
    done = run_sfda("fit", "--config", str(ROOT / "recipes/digits/svhn_mnist/shot.yaml"), "--print_config")
    assert "class_path: sfda.methods.SHOT" in done.stdout and "beta: 0.1" in done.stdout


@pytest.mark.slow  # a CLI subprocess run
def test_class_count_mismatch_names_both_values(mnist_source, tmp_path):
    data = tmp_path / "six"
    for cls in range(6):
        (data / str(cls)).mkdir(parents=True)
        from PIL import Image

        Image.new("L", (28, 28)).save(data / str(cls) / "0.png")
    done = run_sfda("fit", "--config", str(ROOT / "recipes/digits/mnist_optdigits/shot.yaml"),
                    f"--model.init_args.source={mnist_source}", "--data=sfda.data.ImageFolderDataModule",
                    f"--data.init_args.train={data}",
                    '--data.init_args.class_names=["0","1","2","3","4","5"]',
                    f"--trainer.default_root_dir={tmp_path / 'run'}", check=False)
    assert done.returncode != 0
    assert "10 classes" in done.stderr and "6 classes" in done.stderr


def test_missing_and_foreign_artifacts_are_refused(tmp_path):
    with pytest.raises(ArtifactError, match="no such file"):
        load_artifact(tmp_path / "nope.pt")
    torch.save({"weight": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(ArtifactError, match="not an sfda source artifact"):
        load_artifact(tmp_path / "plain.pt")


def test_nan_loss_stops_with_a_clear_error():
    from sfda.tasks.module import TaskModule

    task = TaskModule()
    with pytest.raises(FloatingPointError, match="loss is nan"):
        task.on_before_backward(torch.tensor(float("nan")))


def test_channels_last_changes_layout_not_values():
    from sfda.run.speed import ChannelsLast

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    x = torch.randn(2, 3, 8, 8)
    reference = net(x)
    layout = ChannelsLast()
    layout.setup(None, net, "fit")
    batch = {"image": x.clone()}
    layout.on_train_batch_start(None, net, batch, 0)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert batch["image"].is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(net(batch["image"]), reference, atol=1e-5)
    assert net.channels_last  # the engine's target passes convert their batches too


def test_channels_last_reaches_the_first_layer_of_a_one_channel_network():
    """A (4, 1, 3, 3) weight counts as channels-last already; it must still get channels-last strides,
    or the convolution's output (and the pooling after it) stays NCHW."""
    from sfda.run.speed import ChannelsLast

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.MaxPool2d(2))
    reference = net(torch.ones(2, 1, 8, 8))
    layout = ChannelsLast()
    layout.setup(None, net, "fit")
    batch = {"image": torch.ones(2, 1, 8, 8)}
    layout.on_train_batch_start(None, net, batch, 0)
    first = net[0](batch["image"])
    assert first.is_contiguous(memory_format=torch.channels_last) and not first.is_contiguous()
    assert torch.allclose(net(batch["image"]), reference, atol=1e-6)


def test_channels_last_leaves_a_network_without_convolutions_alone():
    from sfda.run.speed import ChannelsLast

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 4))
    layout = ChannelsLast()
    layout.setup(None, net, "fit")
    batch = {"image": torch.randn(2, 3, 4, 4)}
    layout.on_train_batch_start(None, net, batch, 0)
    assert not net.channels_last
    assert batch["image"].is_contiguous()
    assert not batch["image"].is_contiguous(memory_format=torch.channels_last)
