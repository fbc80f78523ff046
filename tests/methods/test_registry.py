"""ONE registry test: every (method class, task) pair of ``sfda.catalogue.method_classes()`` with ``task in
cls.tasks`` (source training included) runs through the real CLI, in-process, on tiny data of its task:
fit, test, predict (the task's writer output is there and sane) and resume (one epoch, then a second from
``last.ckpt``: it continues, and everything the checkpoint holds, banks and teachers included, is
restored). Each adaptation method changes only what it promises in the network, compared with the source
artifact's weights (``PROMISES``).

Source training classes fit on labelled source data (the same tiny sets), then test and predict with the
fitted checkpoint and resume; their promise is that they train and write a source artifact of their task
that loads. Source-only does not train: ``sfda fit`` refuses it, and test / predict use the source
weights unchanged.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import ROOT
from kits.bad_input import recipe, source_artifact
from kits.detection import SMALL, detection_artifact, digit_sets
from lightning.pytorch.callbacks import Callback

from sfda.catalogue import method_classes
from sfda.cli import VERSION_ENV, main
from sfda.data.benchmarks.pose_figures import JOINTS
from sfda.data.benchmarks.pose_figures import generate as generate_figures
from sfda.data.volumes import VolumeSpec
from sfda.models import SourceArtifact, load_artifact
from sfda.models.pose import pose_architecture, simple_baseline
from sfda.models.segmentation import unet_architecture
from sfda.tasks.adaptation import TASKS

DIGITS = [str(d) for d in range(10)]
POSE_SPEC = {"size": 64, "channels": 3, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
VOLUME_SPEC = {"mode": "2d", "roi": [32, 32], "spacing": [8.0, 8.0, 8.0], "slice_axis": 2}
TINY_UNET = {"channels": [4, 8], "strides": [2], "num_res_units": 1}

# (method, task) pairs of the registry this test does not run, each with its reason (none today)
NOT_HERE: dict[tuple[str, str], str] = {}
# what each method may change in the network, compared with the source artifact's weights
PROMISES = {
    "SourceOnly": "nothing", "TestTimeNorm": "nothing",
    "AdaBN": "batchnorm statistics",
    "Tent": "batchnorm affine",
    "EATA": "batchnorm affine", "ETA": "batchnorm affine", "SAR": "batchnorm affine",
    "LAME": "nothing", "DeYO": "batchnorm affine", "MEMO": "anything",
    "CoTTA": "student, batch statistics, teacher evaluated", "RoTTA": "batchnorm, teacher evaluated",
    "SHOT": "not the head", "NRC": "not the head", "AaD": "not the head", "GLC": "not the head",
    "BNM": "not the head",
    "MeanTeacher": "student, teacher evaluated", "LPLD": "student, teacher evaluated",
    "PoseSFDA": "pose sfda",
    "EntropyPrior": "anything", "LFTL": "anything",
    "SourceTraining": "trains", "SegmentationSourceTraining": "trains", "DetectionSourceTraining": "trains",
    "PoseSourceTraining": "trains",
}
# per-sample state a checkpoint of a method must hold beside its network (the resume check then finds it
# restored), by key prefix; a "+" prefix must also be filled (not all zero) after one epoch
STATE = {"SHOT": ["pseudo_labels", "entropy_threshold"], "NRC": ["+bank."], "AaD": ["+bank."],
         "GLC": ["+bank.", "targets", "cluster_coefficient"],
         "LFTL": ["+anchors.", "given_labels", "query_round"],
         "MeanTeacher": ["+teacher.model."], "LPLD": ["+teacher.model."],
         "PoseSFDA": ["+source_net.", "+target_net."],
         "EATA": ["probs_average", "probs_updates", "anchor", "+fisher", "fisher_seen"],
         "ETA": ["probs_average", "probs_updates"], "SAR": ["loss_average", "loss_updates", "recoveries"],
         "CoTTA": ["+teacher.model."], "RoTTA": ["+teacher.model.", "+memory."]}
# tiny arguments of a method beyond ``source`` (source training: its network), by method and task
ARGS = {
    ("SourceTraining", "classification"): {"backbone": "lenet", "bottleneck_dim": 16},
    ("SegmentationSourceTraining", "segmentation"): TINY_UNET,
    ("DetectionSourceTraining", "detection"): {"detector": SMALL},
    ("PoseSourceTraining", "pose"): {"deconv_channels": 16},
    ("LFTL", "classification"): {"budget": {"total_ratio": 0.1, "round_ratio": 0.05}, "epochs_per_round": 1,
                                 "labelled_batch_size": 8},
    ("GLC", "classification"): {"max_points_per_centroid": None},
    ("MeanTeacher", "pose"): {"confidence": 0.0},  # an untrained teacher is never confident
    # the untrained source predicts near-uniformly: with E0 = 0.4 ln C nothing is reliable (and with epsilon
    # 0.05 everything after the first batch is redundant), so nothing would adapt
    ("EATA", "classification"): {"entropy_margin": 1.0, "redundancy_margin": 1.0},
    ("ETA", "classification"): {"entropy_margin": 1.0, "redundancy_margin": 1.0},
    ("SAR", "classification"): {"entropy_margin": 1.0},
    ("CoTTA", "classification"): {"augmentations": 4},  # an untrained anchor is never confident: 4 views
    ("DeYO", "classification"): {"entropy_margin": 1.0, "plpd_threshold": -1.0},  # as EATA: else none pass
    # episodic MEMO refuses an offline fit; its lr 0.005 trips the collapse guard on the untrained network
    ("MEMO", "classification"): {"episodic": False, "augmentations": 2,
                                 "optim": {"name": "sgd", "lr": 1e-4, "momentum": 0.9, "nesterov": False,
                                           "weight_decay": 0.0, "power": 0.0, "backbone_lr_mult": 1.0}},
}
SEEN: dict[str, dict[str, torch.Tensor]] = {}  # what the runs saw: evaluated networks, restored state


def pairs() -> list[tuple[str, str]]:
    return [(cls.__name__, task) for cls in method_classes() for task in cls.tasks]


RUN = [pair for pair in pairs() if pair not in NOT_HERE]
# tasks whose pairs run in the slow tier (ResNet-18 networks: 1.5-5 s a pair on 2 CPU cores; together
# they would take the fast tier past its 3 minutes): fit, test and predict in one case, the resume in another
SLOW_TASKS = {"detection", "pose"}
# tasks whose pairs (whole: fit, test, predict and resume in one case) run in the slow tier too: whole
# volumes, 1.4-2.5 s a pair; the fast tier keeps classification, the task of most methods
SLOW_WHOLE = {"segmentation"}
CASES = [pytest.param(method, task, task not in SLOW_TASKS, id=f"{method}-{task}",
                      marks=[pytest.mark.slow] if task in SLOW_TASKS | SLOW_WHOLE else [])
         for method, task in RUN] + [
    pytest.param(method, task, True, id=f"{method}-{task}-resume", marks=pytest.mark.slow)
    for method, task in RUN if task in SLOW_TASKS and PROMISES.get(method) != "nothing"]


class Probe(Callback):
    """Keeps the evaluated network's state at the end of test and predict, and the whole module's state
    at the start of training (after a resumed run restored its checkpoint)."""

    def on_train_start(self, trainer, pl_module):
        SEEN["train_start"] = {k: v.clone() for k, v in pl_module.state_dict().items()}

    def on_test_end(self, trainer, pl_module):
        SEEN["test"] = {k: v.clone() for k, v in pl_module.evaluated_network().state_dict().items()}

    def on_predict_end(self, trainer, pl_module):
        SEEN["predict"] = {k: v.clone() for k, v in pl_module.evaluated_network().state_dict().items()}


class StopAfterOneEpoch(Callback):
    """Ends ``fit`` after its first epoch (LFTL's ``max_epochs`` must be its rounds x epochs per round)."""

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def sfda(*args: str) -> str:
    """``sfda <args>`` in-process; raises with its output when it exits with an error."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            main([*args, "--trainer.enable_progress_bar=false"])
    except SystemExit as done:
        if done.code:
            text = out.getvalue()[-3000:]
            raise AssertionError(f"sfda {' '.join(args)} exited with {done.code}:\n{text}") from None
    except BaseException:
        print(out.getvalue()[-3000:])  # shown by pytest with the traceback
        raise
    return out.getvalue()


# tiny data and source artifacts of each task -----------------------------------------------------------
def pose_artifact(path: Path) -> Path:
    torch.manual_seed(0)
    architecture = pose_architecture(len(JOINTS), "resnet18", 16)
    state = {k: v.clone() for k, v in simple_baseline(**architecture["kwargs"]).state_dict().items()}
    SourceArtifact(architecture=architecture, state_dict=state, class_names=list(JOINTS),
                   input=_input_spec(POSE_SPEC), task="pose").save(path)
    return path


def segmentation_artifact(path: Path) -> Path:
    torch.manual_seed(0)
    architecture = unet_architecture(2, 1, 2, **TINY_UNET)
    from monai.networks.nets import UNet

    state = {k: v.clone() for k, v in UNet(**architecture["kwargs"]).state_dict().items()}
    SourceArtifact(architecture=architecture, state_dict=state, class_names=["background", "brain"],
                   input=VolumeSpec(**{**VOLUME_SPEC, "roi": tuple(VOLUME_SPEC["roi"]),
                                       "spacing": tuple(VOLUME_SPEC["spacing"])}),
                   task="segmentation").save(path)
    return path


def _input_spec(spec: dict):
    from sfda.data.transforms import InputSpec

    return InputSpec(size=spec["size"], channels=spec["channels"], mean=tuple(spec["mean"]),
                     std=tuple(spec["std"]))


def data(class_path: str, **init_args) -> dict:
    return {"class_path": f"sfda.data.{class_path}", "init_args": init_args}


@pytest.fixture(scope="session")
def tasks(tmp_path_factory) -> dict[str, dict]:
    """Per task: ``artifact`` (an untrained source artifact), ``target`` and ``source`` data of a few
    samples, and ``eval`` (the number of evaluation samples)."""
    root = tmp_path_factory.mktemp("registry")
    digits = {"train_view": "test", "train_subset": 64, "eval_subset": 32, "batch_size": 32,
              "eval_batch_size": 32}
    boxes = digit_sets(root / "detection", train=2, test=1)
    test_boxes = str(boxes["photo_test"])
    figures = {"flat": generate_figures(root / "pose", "flat", "train", count=8),
               "photo": generate_figures(root / "pose", "photo", "train", count=4),
               "test": generate_figures(root / "pose", "photo", "test", count=2)}
    return {
        "classification": {
            "artifact": source_artifact(root / "digits.pt", DIGITS),
            "target": data("DigitsDataModule", dataset="optdigits", role="target", **digits),
            "source": data("DigitsDataModule", dataset="mnist", role="source",
                           input={"size": 28, "channels": 1, "mean": [0.5], "std": [0.5]}, **digits),
            "eval": 32,
        },
        "segmentation": {
            "artifact": segmentation_artifact(root / "unet.pt"),
            "target": data("SegmentationDataModule", datalist="demo://skull_stripping/itk.json",
                           class_names=["background", "brain"], role="target", batch_size=8,
                           train_view="test"),
            "source": data("SegmentationDataModule", datalist="demo://skull_stripping/colin27.json",
                           class_names=["background", "brain"], role="source", batch_size=8,
                           train_view="test", input=VOLUME_SPEC),
            "eval": 1,
        },
        "detection": {
            "artifact": detection_artifact(root / "detector.pt"),
            "target": data("DetectionDataModule", train=[str(boxes["photo"])], eval=[test_boxes],
                           role="target", batch_size=2, eval_batch_size=1),
            "source": data("DetectionDataModule", train=[str(boxes["plain"])], eval=[test_boxes],
                           role="source", batch_size=1, eval_batch_size=1,
                           input={"size": 128, "channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3}),
            "eval": 1,
        },
        "pose": {
            "artifact": pose_artifact(root / "pose.pt"),
            "target": data("PoseDataModule", train=[str(figures["photo"])], eval=[str(figures["test"])],
                           role="target", batch_size=2, eval_batch_size=2),
            "source": data("PoseDataModule", train=[str(figures["flat"])], eval=[str(figures["test"])],
                           role="source", batch_size=4, eval_batch_size=2, input=POSE_SPEC),
            "eval": 2,
        },
        "root": root,
    }


@pytest.fixture(scope="session")
def open_set_artifact(tasks) -> Path:
    """A digits artifact of classes 0-5 (GLC: 6-9 are the target's private classes)."""
    return source_artifact(tasks["root"] / "digits06.pt", DIGITS[:6])


@pytest.fixture
def clean_version(monkeypatch):
    """In-process runs set the run-version variable; keep it from leaking into later tests."""
    monkeypatch.setenv(VERSION_ENV, "")
    monkeypatch.delenv(VERSION_ENV)


# what a method may change --------------------------------------------------------------------------------
def changed(before: dict, after: dict) -> set[str]:
    """Names of the tensors present in both whose values differ."""
    return {k for k in before.keys() & after.keys() if not torch.equal(before[k], after[k])}


def part(state: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def statistics_of(network: torch.nn.Module) -> set[str]:
    norms = [name for name, module in network.named_modules()
             if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)]
    return {f"{norm}.{s}" for norm in norms for s in ("running_mean", "running_var", "num_batches_tracked")}


def source_network(task: str, artifact) -> torch.nn.Module:
    """The network a method of ``task`` builds from ``artifact`` (what it adapts)."""
    return TASKS[task](artifact.class_names, artifact.input).build_network(artifact)


def assert_promise(method: str, task: str, artifact, state: dict) -> None:
    """A checkpoint's ``state`` differs from the source ``artifact`` only where ``method`` may change it."""
    promise = PROMISES[method]
    built = source_network(task, artifact)
    original = built.state_dict()
    parameters = {name for name, _ in built.named_parameters()}
    network = part(state, "network.")
    moved = changed(original, network)
    if promise == "batchnorm statistics":
        assert moved and moved <= statistics_of(built), sorted(moved - statistics_of(built))
        assert network.keys() == original.keys()
    elif promise == "batchnorm affine":
        norms = [name for name, module in built.named_modules()
                 if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)]
        affine = {f"{norm}.{p}" for norm in norms for p in ("weight", "bias")}
        assert moved and moved <= affine, sorted(moved - affine)
        # Tent normalises with the current batch's statistics: the running ones are dropped, not changed
        assert set(original) - set(network) <= statistics_of(built) and set(network) <= set(original)
    elif promise == "not the head":
        head = {name for name in parameters if name.startswith(f"network.{artifact.head_layer}.")}
        assert head and not moved & head, sorted(moved & head)
        assert moved & (parameters - head), "nothing but the head changed"
        assert network.keys() == original.keys()
    elif promise == "student, teacher evaluated":
        frozen = {f"{name}.{b}" for name, module in built.named_modules()
                  if type(module).__name__ == "FrozenBatchNorm2d" for b, _ in module.named_buffers()}
        assert moved & parameters, "the student did not train"
        assert not moved & frozen, sorted(moved & frozen)
        assert part(state, "teacher.model.").keys() == original.keys()
    elif promise == "pose sfda":  # parameters: all three networks are in train mode (BatchNorm adapts)
        source_net, target_net = part(state, "source_net."), part(state, "target_net.")
        s_moved = changed(original, source_net) & parameters
        assert s_moved and not {k for k in s_moved if not k.startswith("decoder.")}, "S: only its decoder"
        t_moved = changed(original, target_net) & parameters
        assert {k.split(".")[0] for k in t_moved} == {"backbone", "decoder"}, "T trains everything"
        assert {k for k in moved & parameters if k.startswith("backbone.")}, "I's backbone did not train"

        def largest(after: dict) -> float:  # the largest move of a decoder parameter from the source
            return max(float((after[k] - original[k]).abs().max())
                       for k in parameters if k.startswith("decoder."))
        # I's decoder is not optimised: it only follows T by the EMA (0.001 of the gap a step)
        assert largest(network) <= 0.05 * largest(target_net)
    elif promise == "student, batch statistics, teacher evaluated":  # CoTTA: every weight trains
        teacher = part(state, "teacher.model.")
        assert moved & parameters, "the student did not train"
        assert changed(original, teacher) & parameters, "the teacher did not follow the student"
        for net in (network, teacher):  # BatchNorm normalises with the batch: running statistics dropped
            assert set(net) <= set(original) and set(original) - set(net) <= statistics_of(built)
    elif promise == "batchnorm, teacher evaluated":  # RoTTA: robust BatchNorm's scale, shift and statistics
        norms = [name for name, module in built.named_modules()
                 if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)]
        batchnorm = {f"{norm}.{p}" for norm in norms for p in ("weight", "bias")} | statistics_of(built)
        assert moved & parameters and moved <= batchnorm, sorted(moved - batchnorm)
        assert network.keys() == original.keys()
        assert part(state, "teacher.model.").keys() == original.keys()
    elif promise == "anything":
        assert network.keys() == original.keys() and moved & parameters, "nothing trained"
    else:
        raise AssertionError(f"no check for {method}'s promise {promise!r}")


# the task's writer output ----------------------------------------------------------------------------------
def assert_written(task: str, run: Path, count: int, artifact, data: dict) -> None:
    if task == "classification":
        with (run / "predictions.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == count and len({row["index"] for row in rows}) == count
        assert {row["class_name"] for row in rows} <= {*artifact.class_names, "unknown"}
    elif task == "segmentation":
        masks = sorted((run / "masks").glob("*.nii.gz"))
        volume = data["init_args"]["datalist"].removeprefix("demo://skull_stripping/").removesuffix(".json")
        assert [m.name for m in masks] == [f"{volume}.nii.gz"]
        mask = nib.load(str(masks[0]))
        image = nib.load(str(ROOT / "data" / "skull_stripping" / volume / "image.nii.gz"))
        assert mask.shape == image.shape and np.allclose(mask.affine, image.affine)
        assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
        assert (run / "overlays" / f"{volume}.png").stat().st_size > 0  # drawn along the task's slice axis
    elif task == "detection":
        payload = json.loads((run / "detections.json").read_text())
        images = payload["images"] if isinstance(payload, dict) else payload
        assert len(images) == count, payload
    elif task == "pose":
        results = json.loads((run / "keypoints.json").read_text())
        assert len(results) == count
        assert all(len(r["keypoints"]) == 3 * len(artifact.class_names) for r in results)


def test_every_method_of_every_task_is_run_or_excused():
    registry = set(pairs())
    assert set(NOT_HERE) <= registry, f"stale NOT_HERE entries: {sorted(set(NOT_HERE) - registry)}"
    names = {method for method, _ in registry}
    assert set(PROMISES) <= names, f"stale PROMISES entries: {sorted(set(PROMISES) - names)}"
    assert set(ARGS) <= registry, f"stale ARGS entries: {sorted(set(ARGS) - registry)}"
    assert set(STATE) <= names, f"stale STATE entries: {sorted(set(STATE) - names)}"
    unsaid = {method for method, _ in RUN} - set(PROMISES)
    assert not unsaid, f"say what {sorted(unsaid)} may change in PROMISES (or list the pair in NOT_HERE)"
    generic = {"SourceOnly", "AdaBN", "Tent", "MeanTeacher"}
    skipped = {pair for pair in NOT_HERE if pair[0] in generic}
    assert not skipped, f"every generic method runs on every task it claims: {sorted(skipped)}"


@pytest.mark.usefixtures("clean_version")
@pytest.mark.parametrize(("method", "task", "resume"), CASES)
def test_method_fits_tests_predicts_resumes_and_changes_what_it_promises(method, task, resume, tasks,
                                                                          open_set_artifact, tmp_path):
    """``resume``: also resume (detection and pose, in the slow tier, split each pair in two: the
    ``-resume`` case fits and resumes, the other fits, tests and predicts)."""
    evaluate = not (resume and task in SLOW_TASKS)
    kit = tasks[task]
    training = PROMISES[method] == "trains"
    args = dict(ARGS.get((method, task), {}))
    target = json.loads(json.dumps(kit["target"]))
    source = kit["artifact"]
    if method == "GLC":
        source = open_set_artifact
        target["init_args"]["split"] = {"shared": list(range(6)), "target_private": [6, 7, 8, 9]}
    if training:
        written = tmp_path / "written.pt"
        args["artifact"] = str(written)
        args["overwrite_artifact"] = True  # the resumed run writes it again
    else:
        args["source"] = str(source)
    config = recipe(tmp_path / "recipe.yaml", {"class_path": f"sfda.methods.{method}", "init_args": args},
                    kit["source"] if training else target,
                    {"default_root_dir": str(tmp_path), "callbacks": ["tests.methods.test_registry.Probe"]})
    common = ["--config", str(config), "--report_evidence=false"]
    data_of = kit["source"] if training else target
    artifact = load_artifact(source)
    SEEN.clear()
    if PROMISES[method] == "nothing":  # source-only does not train: the source model is the result
        out = io.StringIO()
        with pytest.raises(SystemExit) as refused:  # one line naming the fix, before anything runs
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                main(["fit", *common, "--trainer.enable_progress_bar=false"])
        assert "does not train" in f"{refused.value}{out.getvalue()}"
        assert not list(tmp_path.glob("version_*")), "a refused fit left a run folder"
        sfda("test", *common)
        sfda("predict", *common)
        original = source_network(task, artifact).state_dict()
        for stage in ("test", "predict"):  # every parameter and buffer of the source network, equal
            assert SEEN[stage].keys() == original.keys() and not changed(original, SEEN[stage])
        assert_written(task, tmp_path / "version_1", kit["eval"], artifact, data_of)
        return
    stop_after_one = "--trainer.callbacks+=tests.methods.test_registry.StopAfterOneEpoch"
    one_epoch = ["--trainer.max_epochs=2", stop_after_one] if method == "LFTL" else ["--trainer.max_epochs=1"]
    sfda("fit", *common, *one_epoch)
    fitted = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    state = torch.load(fitted, weights_only=True)["state_dict"]
    # AdaBN takes no optimiser step: its last.ckpt is written once the epoch is done (epoch 1)
    assert torch.load(fitted, weights_only=True)["epoch"] == (1 if method == "AdaBN" else 0)
    if training:  # a source artifact of its task, that adaptation loads, with the trained weights
        artifact = load_artifact(written)
        assert artifact.task == task and source_network(task, artifact) is not None
        assert artifact.class_names == load_artifact(kit["artifact"]).class_names
        trained = part(state, "network.")
        trained = part(trained, "network.") if all(k.startswith("network.") for k in trained) else trained
        assert artifact.state_dict.keys() <= trained.keys() and not changed(artifact.state_dict, trained)
    else:
        assert_promise(method, task, artifact, state)
        for prefix in STATE.get(method, []):
            held = [state[k] for k in state if k.startswith(prefix.lstrip("+"))]
            assert held, f"no {prefix} in the checkpoint"
            assert not prefix.startswith("+") or any(t.float().abs().sum() > 0 for t in held), prefix
    evaluated = "teacher.model." if PROMISES[method].endswith("teacher evaluated") else "network."
    if evaluate:
        sfda("test", *common, f"--ckpt_path={fitted}")
        results = json.loads((tmp_path / "version_1" / "results.json").read_text())
        headline = TASKS[task].headline
        assert 0 <= results[f"{'source_val' if training else 'target'}/{headline}"] <= 1, results
        sfda("predict", *common, f"--ckpt_path={fitted}")
        for stage in ("test", "predict"):  # the adapted (or trained) network is what was evaluated
            assert SEEN[stage].keys() == part(state, evaluated).keys()
            assert not changed(part(state, evaluated), SEEN[stage]), stage
        assert_written(task, tmp_path / "version_2", kit["eval"], artifact, data_of)
    if not resume:
        return
    # resume: a second epoch from the fit's last checkpoint, with everything the checkpoint holds restored
    SEEN.clear()
    sfda("fit", *common, "--trainer.max_epochs=2", f"--ckpt_path={fitted}")
    assert SEEN["train_start"].keys() >= state.keys()
    assert not changed(state, SEEN["train_start"]), "not restored from the checkpoint"
    resumed = tmp_path / ("version_3" if evaluate else "version_1")
    assert json.loads((resumed / "results.json").read_text())["epochs"] == 2
    last = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == (2 if method == "AdaBN" else 1)
    if method != "AdaBN":  # AdaBN's second pass over the same images gives the same statistics
        assert changed(part(state, evaluated), part(last["state_dict"], evaluated)), "it did not train on"
    if not training:
        assert_promise(method, task, artifact, last["state_dict"])
