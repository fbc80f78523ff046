"""``sfda methods``: every method and source-training module, its task, one line on what it does, and the
recipes that use it (found in the repository's ``recipes/`` folder)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from . import methods

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ONE_LINE = {
    "SourceTraining": "train the source classifier and write its artifact",
    "SourceOnly": "the source classifier as is (sfda test)",
    "Tent": "entropy minimisation of BatchNorm scale/shift with batch statistics",
    "SHOT": "information maximisation + centroid pseudo-labels, frozen head",
    "NRC": "reciprocal-neighbour affinity on feature and score banks",
    "AaD": "attract bank neighbours, disperse the rest of the batch",
    "GLC": "universal DA: global one-vs-all clustering + kNN consensus, rejects unknowns",
    "LFTL": "source-free active DA: a labelling budget per round (contrastive, entropy, margin or random "
    "query)",
    "SegmentationSourceTraining": "train the source MONAI UNet and write its artifact",
    "SegmentationSourceOnly": "the source segmentation model as is (sfda test / predict)",
    "AdaBN": "re-estimate BatchNorm statistics on the target volumes",
    "SegmentationTent": "Tent on voxel entropy",
    "EntropyPrior": "entropy + a class-ratio prior (AdaMI); priors estimated, from source sizes, or a CSV",
    "DetectionSourceTraining": "train the source Faster R-CNN and write its artifact",
    "DetectionSourceOnly": "the source detector as is (sfda test / predict)",
    "MeanTeacherDetection": "EMA teacher's confident boxes train the student on strong views",
    "LPLD": "Mean Teacher + distillation of low-confidence proposals (ECCV 2024)",
    "PoseSourceTraining": "train the source SimpleBaseline heatmap model and write its artifact",
    "PoseSourceOnly": "the source pose model as is (sfda test / predict)",
    "PoseAdaBN": "re-estimate BatchNorm statistics on the target people",
    "MeanTeacherPose": "EMA teacher's confident heatmap peaks train the student on strong views",
    "PoseSFDA": "source, intermediate and target networks: source-protect, pose contrastive, IM "
    "(ICCV 2023)",
}
TASKS = (
    ("PoseTask", "pose"),
    ("DetectionTask", "detection"),
    ("SegmentationTask", "segmentation"),
    ("ClassifierTask", "classification"),
)


def task_of(cls: type) -> str:
    """The task a module belongs to, from its task base class."""
    bases = {base.__name__ for base in cls.__mro__}
    return next((task for name, task in TASKS if name in bases), "?")


def summary(cls: type) -> str:
    """One line on what ``cls`` does (``ONE_LINE``; else the first sentence of its docstring)."""
    if cls.__name__ in ONE_LINE:
        return ONE_LINE[cls.__name__]
    text = " ".join((inspect.getdoc(cls) or "").split("\n\n")[0].split())
    return text.split(". ")[0].rstrip(".")


def recipes_using(class_paths: list[str]) -> dict[str, list[str]]:
    """``{class name: [recipe paths relative to recipes/]}`` from the recipes' ``class_path`` lines."""
    found: dict[str, list[str]] = {}
    for recipe in sorted(RECIPES.rglob("*.yaml")) if RECIPES.is_dir() else []:
        match = re.search(r"class_path:\s*sfda\.methods\.(\w+)", recipe.read_text())
        if match and match.group(1) in class_paths:
            found.setdefault(match.group(1), []).append(str(recipe.relative_to(RECIPES)))
    return found


def method_classes() -> list[type]:
    """The LightningModules a recipe can name (``sfda.methods``), task bases and abstract bases excluded."""
    skip = {
        "ClassifierTask",
        "SegmentationTask",
        "DetectionTask",
        "PoseTask",
        "PoseAdaptation",
        "AdaptationModule",
        "SegmentationAdaptation",
        "DetectionAdaptation",
        "Optim",
        "ActiveAdaptation",
    }
    return [getattr(methods, name) for name in methods.__all__ if name not in skip]


def render() -> str:
    """The listing ``sfda methods`` prints, grouped by task."""
    classes = method_classes()
    recipes = recipes_using([c.__name__ for c in classes])
    lines = []
    for task in ("classification", "segmentation", "detection", "pose"):
        lines.append(f"{task}:")
        for cls in [c for c in classes if task_of(c) == task]:
            lines.append(f"  sfda.methods.{cls.__name__:<26} {summary(cls)}")
            used = recipes.get(cls.__name__, [])
            if used:
                shown = ", ".join(used[:3]) + (f" (+{len(used) - 3} more)" if len(used) > 3 else "")
                lines.append(f"  {'':<39} recipes: {shown}")
    lines.append("Arguments of one method: sfda fit --model.help sfda.methods.<Name>")
    return "\n".join(lines)
