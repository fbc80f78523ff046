"""Shared fixtures: a real source model trained by `sfda fit` on optdigits, helpers to run the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kits.bad_input import digit_workspace, sfda, shot_recipe
from kits.report import fit_shot

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n N`: N workers share the cores, one thread each
    import torch

    torch.set_num_threads(1)
SEGMENTATION_RECIPES = ROOT / "recipes" / "segmentation" / "colin27_itk"
SMALL_UNET = ["--model.init_args.channels=[8,16,32]", "--model.init_args.strides=[2,2]"]
DIGIT_INPUT = ["--data.init_args.input.size=28", "--data.init_args.input.channels=1",
               "--data.init_args.input.mean=[0.5]", "--data.init_args.input.std=[0.5]"]


def run_sfda(*args: str, cwd: Path = ROOT, env: dict | None = None,
             check: bool = True) -> subprocess.CompletedProcess:
    """Run the real `sfda` command in a subprocess (1 torch thread, no progress bar)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", **(env or {})}
    full_env.pop("SFDA_RUN_VERSION", None)
    done = subprocess.run([sys.executable, "-m", "sfda", *args, "--trainer.enable_progress_bar=false"],
                          cwd=cwd, env=full_env, capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=900)
    if check and done.returncode != 0:
        raise AssertionError(f"sfda {' '.join(args)} failed ({done.returncode}):\n"
                             f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return done


def results_of(run_root: Path, version: int = 0) -> dict:
    return json.loads((run_root / f"version_{version}" / "results.json").read_text())


def results_on_one_and_two_processes(tmp_path: Path, *args: str) -> tuple[dict, dict]:
    """``sfda <args>`` on 1 CPU process and as 2-process DDP: both runs' results.json."""
    run_sfda(*args, "--trainer.accelerator=cpu", f"--trainer.default_root_dir={tmp_path / 'one'}")
    run_sfda(*args, "--trainer.accelerator=cpu", f"--trainer.default_root_dir={tmp_path / 'two'}",
             "--trainer.strategy=ddp", "--trainer.devices=2")
    return results_of(tmp_path / "one"), results_of(tmp_path / "two")


@pytest.fixture(scope="session")
def mnist_source(tmp_path_factory) -> Path:
    """A LeNet source artifact trained by `sfda fit` on real MNIST (subset, 1 epoch)."""
    root = tmp_path_factory.mktemp("source")
    run_sfda("fit", "--config", str(ROOT / "recipes/digits/mnist_optdigits/source.yaml"),
             f"--trainer.default_root_dir={root}", "--trainer.max_epochs=1",
             f"--model.init_args.artifact={root}/source.pt", "--data.init_args.train_subset=3000",
             "--data.init_args.eval_subset=500")
    artifact = root / "source.pt"
    assert artifact.exists()
    assert results_of(root)["source_val/best_acc"] > 0.5  # the score that chose the weights is reported
    return artifact


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A 2-epoch SHOT run of an untrained LeNet on tiny digit folders (seconds; no real accuracy)."""
    from kits.bad_input import digit_images, folder_data, recipe, sfda, source_artifact

    names = [str(i) for i in range(10)]
    folder = tmp_path_factory.mktemp("tiny")
    digit_images(folder / "target", names, per_class=3)
    source = source_artifact(folder / "source.pt", names)
    model = {"class_path": "sfda.methods.SHOT", "init_args": {"source": str(source), "beta": 0.1}}
    config = recipe(folder / "shot.yaml", model, folder_data(folder / "target"),
                    {"max_epochs": 2, "default_root_dir": str(folder / "runs" / "shot")})
    code, text = sfda("fit", "--config", str(config))
    assert code == 0, text
    return folder / "runs" / "shot" / "version_0"


@pytest.fixture(scope="session")
def colin_source(tmp_path_factory):
    """A small 2-D UNet trained by `sfda fit` on the real Colin27 volume (2 epochs)."""
    root = tmp_path_factory.mktemp("seg_source")
    run_sfda("fit", "--config", str(SEGMENTATION_RECIPES / "source.yaml"),
             f"--trainer.default_root_dir={root}", "--trainer.max_epochs=2",
             "--trainer.check_val_every_n_epoch=1",
             f"--model.init_args.artifact={root}/source.pt", *SMALL_UNET)
    results = results_of(root)
    assert 0 < results["source_val/dice"] <= 1 and math.isfinite(results["source_val/hd95"])
    # Colin27's mean brain fraction (the recipes' size)
    assert results["source/size/brain"] == pytest.approx(0.177, abs=1e-3)
    return root / "source.pt"


@pytest.fixture()
def workspace(tmp_path, monkeypatch) -> Path:
    """A user's folder (also the cwd) with a 10-class target image folder and a source artifact (the
    sweep tests and tests/run/test_{guards,stops}.py define their own ``workspace``)."""
    return digit_workspace(tmp_path, monkeypatch)


@pytest.fixture()
def adapted(workspace):
    """The workspace after one real SHOT epoch: runs/shot/version_0/checkpoints/last.ckpt."""
    code, text = sfda("fit", "--config", shot_recipe(workspace))
    assert code == 0, text[-2000:]
    return workspace


@pytest.fixture(scope="module")
def shot_runs(mnist_source, tmp_path_factory) -> list[Path]:
    """Two SHOT runs of one recipe root (version_0, version_1; the second rejects unknowns)."""
    root = tmp_path_factory.mktemp("report") / "runs" / "shot"
    return [
        fit_shot(mnist_source, root),
        fit_shot(mnist_source, root, "--model.init_args.reject_unknown=0.5"),
    ]
