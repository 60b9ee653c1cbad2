"""A photo the gate stops (retake / cannot_assess) carries no diagnosis: no probabilities, top-5 or top-1 in the
JSON, the CSV or the web answer (the Python object marks them not to be shown); it keeps its triage, the reason (quality) and what to do (advice). ``--no-gate``
still gives the numbers, for research."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dermlens.cli import app


@pytest.fixture()
def stopped_photos(tmp_path):
    """A 1x1 PNG (too small to judge) and a flat grey picture (no skin, no contrast): both stopped by the classical
    checks every model has, fitted gate or not."""
    Image.new("RGB", (1, 1), (180, 120, 100)).save(tmp_path / "one_pixel.png")
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(tmp_path / "flat.png")
    return [tmp_path / "one_pixel.png", tmp_path / "flat.png"]


def predict_cli(model_dir, photos, *options):
    result = CliRunner().invoke(app, ["predict", "--model", str(model_dir), "--workers", "0", "--no-progress",
                                      *options, *map(str, photos)])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_python_analyses_of_stopped_photos_show_no_diagnosis(predictor, stopped_photos):
    """The object keeps the numbers for research code (what would a degraded photo have been called?) but says
    they are not to be shown, and its JSON form carries none."""
    for analysis in predictor.predict(stopped_photos):
        assert analysis.triage in ("retake", "cannot_assess"), analysis
        assert analysis.stopped and not analysis.diagnosis_shown
        assert analysis.quality and analysis.quality != "ok" and analysis.advice
        assert analysis.to_dict()["probabilities"] == {} and analysis.to_dict()["top5"] == []


def test_csv_rows_of_stopped_photos_have_empty_diagnosis_cells_and_keep_the_reason(tiny_model_dir, stopped_photos):
    rows = list(csv.DictReader(io.StringIO(predict_cli(tiny_model_dir, stopped_photos))))
    assert len(rows) == 2
    for row in rows:
        assert row["triage"] in ("retake", "cannot_assess") and row["quality"] not in ("", "ok") and row["advice"]
        assert row["top1_class"] == "" and row["error"] == ""
        probability_cells = {k: v for k, v in row.items() if k.startswith("p_")}
        assert probability_cells and set(probability_cells.values()) == {""}


def test_json_items_of_stopped_photos_have_no_probabilities(tiny_model_dir, stopped_photos):
    for item in json.loads(predict_cli(tiny_model_dir, stopped_photos, "--format", "json")):
        assert item["triage"] in ("retake", "cannot_assess") and item["advice"]
        assert item["probabilities"] == {} and item["top5"] == []


def test_without_the_gate_the_same_photos_get_numbers(tiny_model_dir, stopped_photos):
    rows = list(csv.DictReader(io.StringIO(predict_cli(tiny_model_dir, stopped_photos, "--no-gate"))))
    for row in rows:
        assert row["quality"] == "not_checked" and row["triage"] in ("refer", "reassure")
        assert row["top1_class"] and 0 <= float(row["p_malignant"]) <= 1


def test_the_top_class_column_is_named_for_what_it_is_a_training_class(tiny_model_dir, image_cases):
    """`top1_class` is the network's top training class; `p_<node>` sums the classes at or below a node, so it is
    never below the probability of the class of the same name (docs/prediction.md, "Classes and nodes")."""
    from dermlens.predict import Predictor

    photo = image_cases.good["rgb"][0]
    [row] = list(csv.DictReader(io.StringIO(predict_cli(tiny_model_dir, [photo], "--no-gate"))))
    assert "top1" not in row and row["top1_class"]
    prediction = Predictor(tiny_model_dir, gate=False).predict_one(str(photo))
    assert row["top1_class"] == prediction.top5[0][0]
    for node, class_probability in prediction.top5:
        assert prediction.probabilities[node] >= class_probability - 1e-9
