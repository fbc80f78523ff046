"""Detection methods end to end on tiny real inputs: Mean Teacher and LPLD steps, evaluation,
predictions in original-image pixels, source training, and artifacts of the wrong task."""

from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, results_of, run_sfda
from kits.detection import DIGITS, SPEC, detection_inputs

from sfda.methods import LPLD, SHOT, MeanTeacherDetection, SourceOnly
from sfda.models import ArtifactError
from sfda.tasks.detection import DetectionTask


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return detection_inputs(tmp_path_factory.mktemp("detection"))


def test_an_artifact_of_the_wrong_task_is_refused_naming_the_file(inputs, mnist_source):
    with pytest.raises(
        ArtifactError, match=r"detector.pt is a 'detection' artifact; SHOT adapts classification models only"
    ):
        SHOT(str(inputs["artifact"]))
    with pytest.raises(
        ArtifactError, match=r"source.pt is a 'classification' artifact; LPLD adapts detection models only"
    ):
        LPLD(str(mnist_source))


@pytest.mark.slow  # a CLI subprocess run
def test_source_training_writes_a_detection_artifact_that_adaptation_loads(inputs, tmp_path):
    recipe = ROOT / "recipes/detection/digits_photos/source.yaml"
    artifact = tmp_path / "source.pt"
    run_sfda(
        "fit",
        "--config",
        str(recipe),
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_epochs=1",
        f"--model.init_args.artifact={artifact}",
        f"--data.init_args.train=[{inputs['plain']}]",
        "--data.init_args.batch_size=2",
    )
    results = results_of(tmp_path)
    assert artifact.exists() and "source_val/best_ap50" in results and results["epochs"] == 1
    checkpoints = tmp_path / "version_0" / "checkpoints"
    last = checkpoints / "last.ckpt"  # a link to the epoch checkpoint, not a second copy
    assert (
        last.is_symlink()
        and last.resolve().parent == checkpoints.resolve()
        and len(list(checkpoints.iterdir())) == 2
    )
    method = LPLD(str(artifact))
    assert method.class_names == DIGITS and method.artifact.task == "detection"


def test_every_network_the_detection_task_scores_keeps_the_same_proposals(inputs):
    def settings(network):
        return network.rpn._post_nms_top_n["testing"], network.rpn.score_thresh

    def scored(method):
        teacher = [method.teacher.model] if method.paired_name else []
        return [method.network, method.source_network(), *teacher]

    plain, mean_teacher = SourceOnly(str(inputs["artifact"])), MeanTeacherDetection(str(inputs["artifact"]))
    assert {settings(n) for m in (plain, mean_teacher) for n in scored(m)} == {(300, 0.0)}
    fewer = LPLD(str(inputs["artifact"]), teacher_proposals=50)  # a recipe's count holds for the source model
    assert {settings(n) for n in scored(fewer)} == {(50, 0.0)}
    images = list(torch.rand(1, 3, SPEC.size, SPEC.size))
    with torch.no_grad():  # source-only before adaptation is the teacher before its first update
        source, teacher = plain.source_network()(images), mean_teacher.teacher.model.eval()(images)
    assert all(torch.equal(source[0][k], teacher[0][k]) for k in ("boxes", "scores", "labels"))


def test_pseudo_box_precision_counts_boxes_over_the_epoch_and_warns_with_the_counts():
    task = DetectionTask(DIGITS, SPEC)
    logged, references = {}, [None]
    module = SimpleNamespace(reporting_references=lambda: references[0], device="cpu", current_epoch=0,
                             log=logged.__setitem__,
                             trainer=SimpleNamespace(strategy=SimpleNamespace(reduce=lambda x, reduce_op: x)))
    box, far = [0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]
    task.count_pseudo_boxes(module, "hpl", [torch.tensor([box, far])])  # no references: not counted
    references[0] = [torch.tensor([box])]
    task.count_pseudo_boxes(module, "hpl", [torch.tensor([box, far, far])])  # 1 of 3
    task.count_pseudo_boxes(module, "hpl", [torch.tensor([box])])  # 1 of 1: 2 of 4, not the mean 2/3
    task.count_pseudo_boxes(module, "lpl", [torch.zeros(0, 4)])
    task.pseudo_counts().update(images=5, images_without_hpl=2)
    with pytest.warns(UserWarning, match="epoch 1: .* on 2 of 5 target images; they trained as all backgr"):
        task.teacher_epoch_end(module, 0.7)
    assert logged == {"train/hpl_precision": 0.5}  # no LPL: no LPL precision
    task.pseudo_counts().update(images=5, images_without_hpl=5)  # the counts started again
    with pytest.warns(UserWarning, match="NO box scoring above model.confidence 0.7 on ANY of the 5"):
        task.teacher_epoch_end(module, 0.7)
