"""Detection methods end to end on tiny real inputs: Mean Teacher and LPLD steps, evaluation,
predictions in original-image pixels, source training, and artifacts of the wrong task."""

import pytest
from conftest import ROOT, results_of, run_sfda
from kits.detection import DIGITS, detection_inputs

from sfda.methods import LPLD, SHOT
from sfda.models import ArtifactError


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
