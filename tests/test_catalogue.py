"""Discoverable from the command line: `sfda --help` describes sfda; `sfda methods` lists every method."""

import contextlib
import io

import pytest

from sfda import methods
from sfda.catalogue import method_classes, task_of
from sfda.commands import main


def run(*args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main(list(args))
        except SystemExit:
            pass
    return out.getvalue()


def test_sfda_help_describes_sfda_and_points_to_the_method_list():
    text = run("--help")
    assert "adapt a trained model to unlabelled data of a new domain" in text and "sfda methods" in text
    assert "Lightning Trainer command line tool" not in text


def test_sfda_methods_lists_every_method_with_its_task_and_recipes():
    text = run("methods")
    listed = method_classes()
    assert {c.__name__ for c in listed} >= {
        "SHOT",
        "NRC",
        "AaD",
        "Tent",
        "GLC",
        "LFTL",
        "EntropyPrior",
        "LPLD",
        "MeanTeacher",
        "AdaBN",
        "SourceOnly",
        "DetectionSourceTraining",
    }
    for cls in listed:
        assert f"sfda.methods.{cls.__name__} " in text
    assert task_of(methods.LPLD) == "detection"
    assert task_of(methods.AdaBN) == "classification/segmentation/pose"
    assert task_of(methods.SHOT) == "classification"
    section = text.split("detection:")[1]
    assert "detection/yell_osbs/lpld.yaml" in section and "sfda.methods.SHOT" not in section


@pytest.mark.parametrize("name", ["SHOT", "LPLD"])
def test_the_arguments_of_one_method_are_shown(name):
    text = run("fit", "--model.help", f"sfda.methods.{name}")
    assert "--model.source SOURCE" in text and f"Help for --model.help=sfda.methods.{name}" in text


def test_old_class_names_that_recipes_use_are_the_one_generic_class():
    assert methods.SegmentationSourceOnly is methods.DetectionSourceOnly is methods.SourceOnly
    assert methods.PoseSourceOnly is methods.SourceOnly
    assert methods.PoseAdaBN is methods.AdaBN and methods.SegmentationTent is methods.Tent
    assert methods.MeanTeacherDetection is methods.MeanTeacherPose is methods.MeanTeacher
    assert set(methods.METHODS) >= {methods.SourceOnly, methods.AdaBN, methods.Tent, methods.MeanTeacher}
    assert len(methods.METHODS) == len(set(methods.METHODS))  # an alias is not a second method
