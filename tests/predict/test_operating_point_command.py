"""`dermlens operating-point`: a site re-tunes the referral threshold on its own validation data."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from dermlens.cli import app
from dermlens.models import read_config
from dermlens.predict import Predictor


def test_operating_point_is_retuned_on_given_data_and_written_to_a_new_folder(tiny_model_dir, synthetic_parts, synthetic_labels_csv, tmp_path):
    out = tmp_path / "retuned"
    result = CliRunner().invoke(
        app,
        ["operating-point", "--data", str(synthetic_labels_csv), "--model", str(tiny_model_dir), "--split", "",
         "--target-sensitivity", "1.0", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    op = read_config(out).operating_point
    assert op.target_sensitivity == 1.0 and op.sensitivity == 1.0
    assert "validation (60 images" in op.chosen_on
    # The original model is untouched; the new one calls every malignant synthetic image "refer".
    assert json.loads((tiny_model_dir / "config.json").read_text())["operating_point"] != json.loads((out / "config.json").read_text())["operating_point"]
    predictor = Predictor(out)
    records = [r for part in synthetic_parts.values() for r in part if r.node in ("melanoma", "basal_cell_carcinoma")]
    calls = predictor.predict([str(r.path) for r in records])
    assert all(c.triage == "refer" for c in calls)
