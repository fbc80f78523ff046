"""Model-zoo classifiers through the real ``sfda`` command: a timm ResNet, ViT and EfficientNet and a
torchvision ResNet, random weights saved to safetensors and named in the recipe, adapted by SHOT and Tent,
then tested and predicted from the adapted checkpoint."""

from __future__ import annotations

import csv
import json

import pytest
from kits.bad_input import digit_images, folder_data, recipe, sfda
from kits.zoo import ZOO_MODELS, zoo_source


@pytest.mark.slow  # 4 models x (2 fits, test, predict) on 40 images
@pytest.mark.parametrize("name", sorted(ZOO_MODELS))
def test_a_zoo_model_adapts_tests_and_predicts(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SFDA_RUN_VERSION", raising=False)
    digit_images(tmp_path / "target", [str(i) for i in range(10)])
    # 32-pixel inputs named in the recipe; the ViT's (built for 32 pixels) left to the library's record
    source = zoo_source(tmp_path, name, with_input=name != "timm-vit")
    for method in ("SHOT", "Tent"):
        path = recipe(tmp_path / f"{method.lower()}.yaml",
                      {"class_path": f"sfda.methods.{method}", "init_args": {"source": source}},
                      folder_data(tmp_path / "target"), trainer={"limit_train_batches": 2})
        code, text = sfda("fit", "--config", str(path))
        assert code == 0, text[-3000:]
        run = tmp_path / "runs" / method.lower() / "version_0"
        results = json.loads((run / "results.json").read_text())
        assert 0.0 <= results["target/acc"] <= 1.0 and results["label_free/entropy"] == results[
            "label_free/entropy"]
    checkpoint = tmp_path / "runs" / "tent" / "version_0" / "checkpoints" / "last.ckpt"
    code, text = sfda("test", "--config", str(tmp_path / "tent.yaml"), f"--ckpt_path={checkpoint}")
    assert code == 0, text[-3000:]
    assert "target/acc" in json.loads((tmp_path / "runs" / "tent" / "version_1" / "results.json").read_text())
    code, text = sfda("predict", "--config", str(tmp_path / "tent.yaml"), f"--ckpt_path={checkpoint}")
    assert code == 0, text[-3000:]
    with open(tmp_path / "runs" / "tent" / "version_2" / "predictions.csv") as rows:
        predictions = list(csv.DictReader(rows))
    assert len(predictions) == 40 and {p["prediction"] for p in predictions} <= {str(i) for i in range(10)}
