"""The page's operating-point sentence shows what the model card measured on external data, not validation alone."""
from __future__ import annotations

import json
import shutil

from dermlens.predict import Predictor
from dermlens.serve.analysis import MODEL_CARD_FIGURES, operating_point_summary

FIGURES = {
    "ph2": {"melanomas referred (sensitivity)": {"value": 0.45, "ci95": [0.3, 0.6], "n": 40},
            "nevi reassured (specificity)": {"value": 0.8, "ci95": [0.7, 0.9], "n": 160}},
    "sd198_clinical": {"malignant referred (sensitivity)": {"value": 0.9, "ci95": [0.8, 0.95], "n": 82}},
}


def test_external_sensitivity_follows_the_photos_modality(serve_model_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(serve_model_dir, model)
    (model / MODEL_CARD_FIGURES).write_text(json.dumps(FIGURES))
    predictor = Predictor(model)
    dermoscopic = operating_point_summary(predictor, predictor.config.operating_point_for("dermoscopic"), "dermoscopic")
    assert "PH2" in dermoscopic and "45% of 40 melanomas (95% CI 30%-60%)" in dermoscopic and "80% of 160" in dermoscopic
    assert "SD-198" not in dermoscopic
    clinical = operating_point_summary(predictor, predictor.config.operating_point_for("clinical"), "clinical")
    assert "SD-198" in clinical and "90% of 82 malignant" in clinical and "PH2" not in clinical
    unknown = operating_point_summary(predictor, predictor.config.operating_point)
    assert "PH2" in unknown and "SD-198" in unknown


def test_without_model_card_figures_the_sentence_says_only_what_was_measured(serve_model_dir):
    predictor = Predictor(serve_model_dir)
    summary = operating_point_summary(predictor, predictor.config.operating_point_for("dermoscopic"), "dermoscopic")
    assert "never saw" not in summary
