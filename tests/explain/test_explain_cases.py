"""The study's saliency cases and ``dermlens explain IMAGE``."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from dermlens.cli import app
from dermlens.explain.cases import select_cases


def test_select_cases_draws_correct_and_incorrect_per_class():
    index = np.arange(100, 112)
    truth = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, -1, -1])
    predicted = np.array([0, 0, 1, 2, 1, 0, 0, 0, 2, 2, 0, 1])
    cases = select_cases(index, truth, predicted, per_class=2, seed=0)
    by = {(c["truth"], c["correct"]): [] for c in cases}
    for c in cases:
        by[(c["truth"], c["correct"])].append(c)
        assert c["correct"] == (c["predicted"] == c["truth"])
        assert c["index"] not in (110, 111)  # uncovered truth (-1) is never a case
    assert len(by[(0, True)]) == 2 and len(by[(0, False)]) == 2
    assert len(by[(1, True)]) == 1 and len(by[(1, False)]) == 2
    assert len(by[(2, True)]) == 2 and (2, False) not in by  # no wrong class-2 case exists
    assert select_cases(index, truth, predicted, 2, seed=0) == cases  # reproducible


def test_explain_command_writes_overlays_for_one_image(tiny_model_dir, synthetic_labels_csv, tmp_path):
    image = next((synthetic_labels_csv.parent / "images" / "melanoma").glob("*.png"))
    result = CliRunner().invoke(app, ["explain", str(image), "--model", str(tiny_model_dir), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    explanation = json.loads((tmp_path / f"{image.stem}-explanation.json").read_text())
    assert set(explanation["overlays"]) == {"gradcam", "input_gradient"}
    for info in explanation["overlays"].values():
        with Image.open(info["file"]) as overlay:
            assert overlay.mode == "RGB" and min(overlay.size) >= 64
    top = explanation["prediction"]["top5"][0]
    assert explanation["overlays"]["gradcam"]["target"] == top["node"]  # no --target: the top class is explained
    assert abs(explanation["overlays"]["gradcam"]["probability"] - top["probability"]) < 1e-4


def test_explain_command_reports_a_bad_image(tiny_model_dir, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    result = CliRunner().invoke(app, ["explain", str(bad), "--model", str(tiny_model_dir), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "broken.jpg" in result.output
