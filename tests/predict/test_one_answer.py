"""One photo, one answer: `dermlens predict`, the web service and `dermlens screen` read the same analysis.

The photo is a lesion on a larger picture: screening analyses its crop, and the same crop (a lossless PNG) goes
to `dermlens predict` and to `POST /api/v1/predict`, each through its own default path (the CLI's and screening's
default engine, the service's PyTorch engine: equal within the engines' documented 1e-5)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dermlens.cli import app
from dermlens.data.synthetic import render_lesion
from dermlens.screen.lesion_head import LesionHead
from dermlens.screen.screener import Screener, square_crop

pytest.importorskip("fastapi")
pytest.importorskip("cv2")


def test_predict_serve_and_screen_give_the_same_probabilities_verdict_and_triage(two_modality_model_dir, tmp_path):
    from fastapi.testclient import TestClient

    from dermlens.serve import create_app

    # a synthetic lesion photo, larger than the model's input: the crop around its lesion still looks like the
    # photos the test gate's skin head was fitted on
    wide = np.asarray(render_lesion("melanoma", np.random.default_rng(3), size=200))
    Image.fromarray(wide).save(tmp_path / "back.png")
    keep_all = LesionHead.from_tensors(np.zeros(1280), 5.0, np.zeros(1280), np.ones(1280), info={"threshold": 0.5})
    screener = Screener(two_modality_model_dir, lesion_head=keep_all)
    lesions = screener.analyse_photo(tmp_path / "back.png").lesions
    lesion = max(lesions, key=lambda l: (l.box[2] - l.box[0]) * (l.box[3] - l.box[1]))  # the lesion, not a speck
    crop = tmp_path / "crop.png"
    Image.fromarray(square_crop(wide, lesion.box, screener.config.crop_context)).save(crop)

    cli = CliRunner().invoke(app, ["predict", str(crop), "--model", str(two_modality_model_dir), "--format", "json",
                                   "--modality", "clinical", "--no-progress"])  # wide-field photos are clinical
    assert cli.exit_code == 0, cli.output
    row = json.loads(cli.stdout)[0]
    with TestClient(create_app(model_dir=two_modality_model_dir, warm_up=False)) as client:
        body = client.post("/api/v1/predict?saliency=none", files={"image": ("crop.png", crop.read_bytes(), "image/png")},
                           data={"modality": "clinical"}).json()

    assert row["triage"] in ("refer", "reassure"), f"the test gate stopped the crop ({row['quality']})"
    nodes = list(row["probabilities"])
    np.testing.assert_allclose([body["probabilities"][n] for n in nodes], [row["probabilities"][n] for n in nodes],
                               atol=1e-5)
    assert lesion.p_malignant == pytest.approx(row["probabilities"]["malignant"], abs=1e-5)
    assert lesion.top_class == row["top5"][0]["node"] == body["top5"][0]["node"]
    assert lesion.quality == row["quality"] == body["quality"] == body["gate"]["quality"]
    assert lesion.ood_score == pytest.approx(row["ood_score"], abs=1e-3) and row["ood_score"] == pytest.approx(body["ood_score"], abs=1e-3)
    assert row["triage"] == body["triage"] and lesion.suspicious == (row["triage"] == "refer")
    assert row["modality"] == body["modality"] == "clinical"
