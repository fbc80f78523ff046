"""``sfda methods``: every method and source-training module, its task, one line on what it does, and the
recipes that use it (found in the repository's ``recipes/`` folder)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from . import methods

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# the task of each recipes/<folder>
RECIPE_TASKS = {"digits": "classification", "active": "classification", "universal": "classification",
                "segmentation": "segmentation", "detection": "detection", "pose": "pose",
                "tta": "classification"}  # recipes/tta: the online streams (classification so far)
ONE_LINE = {
    "SourceTraining": "train the source classifier and write its artifact",
    "SourceOnly": "the source model as is (sfda test / predict)",
    "AdaBN": "re-estimate BatchNorm statistics on the target data",
    "Tent": "entropy minimisation of BatchNorm scale/shift with batch statistics (per voxel for masks)",
    "MeanTeacher": "EMA teacher's confident boxes or heatmap peaks train the student on strong views",
    "SHOT": "information maximisation + centroid pseudo-labels, frozen head",
    "NRC": "reciprocal-neighbour affinity on feature and score banks",
    "AaD": "attract bank neighbours, disperse the rest of the batch",
    "GLC": "universal DA: global one-vs-all clustering + kNN consensus, rejects unknowns",
    "LFTL": "source-free active DA: a labelling budget per round (contrastive, entropy, margin or random "
    "query)",
    "SegmentationSourceTraining": "train the source MONAI UNet and write its artifact",
    "EntropyPrior": "entropy + a class-ratio prior (AdaMI); priors estimated, from source sizes, or a CSV",
    "DetectionSourceTraining": "train the source Faster R-CNN and write its artifact",
    "LPLD": "Mean Teacher + distillation of low-confidence proposals (ECCV 2024)",
    "PoseSourceTraining": "train the source SimpleBaseline heatmap model and write its artifact",
    "PoseSFDA": "source, intermediate and target networks: source-protect, pose contrastive, IM "
    "(ICCV 2023)",
    "TestTimeNorm": "online: each batch normalised with its own BatchNorm statistics (BN-1), or mixed with "
    "the source's (prior N)",
    "LAME": "online: the batch's Laplacian-regularised assignment over its feature affinity; no weight "
    "changes",
    "MEMO": "online: each point adapted on the marginal entropy of its AugMix views, then predicted "
    "(episodic)",
    "DeYO": "online: entropy minimisation of the samples whose prediction survives patch shuffling (PLPD)",
    "CoTTA": "online, continual: EMA teacher averaged over augmentations, stochastic restore to the source",
    "RoTTA": "online, correlated labels: robust BatchNorm, category-balanced memory, timeliness-weighted "
    "teacher",
}


def task_of(cls: type) -> str:
    """The tasks a module class works on (its ``tasks``), joined by "/"; "?" for a class without."""
    return "/".join(getattr(cls, "tasks", ())) or "?"


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
    """The LightningModules a recipe can name: source training, then the methods (active-sampling
    baselines are LFTL's ``query`` options)."""
    adapting = [m for m in methods.METHODS if m is not methods.ActiveAdaptation]
    generic_first = sorted(adapting, key=lambda m: (len(m.tasks) == 1, m.__name__))
    return [*methods.SOURCE_TRAINING, *generic_first]


def names_of(cls: type) -> list[str]:
    """Every name ``sfda.methods`` exports ``cls`` under (its own first, then older aliases)."""
    aliases = [name for name in methods.__all__ if getattr(methods, name) is cls and name != cls.__name__]
    return [cls.__name__, *aliases]


def render() -> str:
    """The listing ``sfda methods`` prints, grouped by task (a method for several tasks under each)."""
    classes = method_classes()
    recipes = recipes_using([name for cls in classes for name in names_of(cls)])
    lines = []
    for task in ("classification", "segmentation", "detection", "pose"):
        lines.append(f"{task}:")
        for cls in [c for c in classes if task in c.tasks]:
            lines.append(f"  sfda.methods.{cls.__name__:<26} {summary(cls)}")
            used = [r for name in names_of(cls) for r in recipes.get(name, [])
                    if RECIPE_TASKS.get(r.split("/")[0]) == task]
            if used:
                shown = ", ".join(used[:3]) + (f" (+{len(used) - 3} more)" if len(used) > 3 else "")
                lines.append(f"  {'':<39} recipes: {shown}")
    lines.append("Arguments of one method: sfda fit --model.help sfda.methods.<Name>")
    return "\n".join(lines)
