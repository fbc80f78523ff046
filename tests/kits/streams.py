"""Short corrupted-MNIST streams for the online test-time adaptation tests (real MNIST test images, corrupted
here), as the ``data`` section of a recipe, and the online errors a stream run reports."""

from __future__ import annotations

SHIFTS = ["gaussian_noise", "contrast"]


def stream(setting: str = "continual", subset: int = 48, corruptions=SHIFTS, **extra) -> dict:
    """A ``StreamDataModule`` recipe section: ``subset`` images per domain, one domain per corruption at
    severity 5, batches of 16 unless ``extra`` says otherwise."""
    source = {"class_path": "sfda.data.CorruptedImages",
              "init_args": {"dataset": "mnist", "corruptions": list(corruptions), "subset": subset}}
    return {"class_path": "sfda.data.StreamDataModule",
            "init_args": {"source": source, "setting": setting, "batch_size": 16, **extra}}


def online(results: dict) -> dict[str, float]:
    """The ``online/.../error`` entries of a results.json: per domain and their mean."""
    return {k: v for k, v in results.items() if k.startswith("online/") and k.endswith("/error")}
