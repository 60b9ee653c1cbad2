"""Per-modality operating points and the modality recogniser: stored with the model, used by the predictor.

Flat test pictures would be stopped by the photo gate (tests/gate); these tests switch it off to test triage alone.
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from dermlens.models import read_config
from dermlens.models.modality import HEAD_FILE, ModalityRecogniser, check_modality
from dermlens.models.saved import ModelConfig, OperatingPoint
from dermlens.predict import Predictor


@pytest.fixture
def two_modality_model(tmp_path, tiny_model_dir):
    """The tiny model with a dermoscopic point that refers everything and a clinical one that refers nothing."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["operating_points"] = {
        "dermoscopic": {"node": "malignant", "threshold": 0.0, "chosen_on": "test: refer all"},
        "clinical": {"node": "malignant", "threshold": 1.5, "chosen_on": "test: refer none"},
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def write_head(folder, bias: float, width: int = 1280) -> None:
    save_file({"weight": torch.zeros(width), "bias": torch.tensor([bias])}, str(folder / HEAD_FILE))


def test_per_modality_operating_points_round_trip_and_fall_back(two_modality_model):
    config = read_config(two_modality_model)
    assert config.operating_point_for("dermoscopic").threshold == 0.0
    assert config.operating_point_for("clinical").threshold == 1.5
    assert config.operating_point_for("") is config.operating_point  # unknown modality: the pooled point
    again = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.operating_points == config.operating_points
    assert isinstance(again.operating_points["clinical"], OperatingPoint)


def test_the_given_modality_picks_its_operating_point(two_modality_model):
    predictor = Predictor(two_modality_model, gate=False)
    photo = Image.new("RGB", (80, 60), (150, 100, 80))
    derm = predictor.predict_one(photo, modality="dermoscopic")
    clinical = predictor.predict_one(photo, modality="clinical")
    assert (derm.triage, derm.modality, derm.modality_source) == ("refer", "dermoscopic", "given")
    assert (clinical.triage, clinical.modality) == ("reassure", "clinical")
    assert derm.probabilities == clinical.probabilities  # the modality changes the call, not the probabilities


def test_an_unstated_modality_is_recognised_by_the_head_beside_the_model(two_modality_model):
    write_head(two_modality_model, bias=+10.0)  # always "clinical"
    p = Predictor(two_modality_model, gate=False).predict_one(Image.new("RGB", (80, 60), (150, 100, 80)))
    assert (p.modality, p.modality_source, p.triage) == ("clinical", "recognised", "reassure")
    write_head(two_modality_model, bias=-10.0)  # always "dermoscopic"
    p = Predictor(two_modality_model, gate=False).predict_one(Image.new("RGB", (80, 60), (150, 100, 80)))
    assert (p.modality, p.triage) == ("dermoscopic", "refer")


def test_a_model_of_one_modality_has_no_recogniser_and_uses_its_one_point(tiny_model_dir):
    assert ModalityRecogniser.load(tiny_model_dir) is None
    p = Predictor(tiny_model_dir, gate=False).predict_one(Image.new("RGB", (80, 60), (150, 100, 80)))
    assert p.modality == "" and p.triage in ("refer", "reassure")


def test_a_wrong_modality_is_one_clear_error(tiny_model_dir):
    assert check_modality("auto") is None and check_modality("clinical") == "clinical"
    with pytest.raises(ValueError, match="modality must be auto, dermoscopic or clinical; got 'xray'"):
        Predictor(tiny_model_dir).predict_one(Image.new("RGB", (8, 8)), modality="xray")
