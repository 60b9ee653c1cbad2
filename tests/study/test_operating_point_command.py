"""`dermlens operating-point`: a site re-tunes the referral threshold on its own validation data."""
from __future__ import annotations

import json

import pytest
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


def relabelled(labels_csv, folder, modality: str):
    """The synthetic set's labels.csv with every photo labelled ``modality`` (paths made absolute)."""
    lines = labels_csv.read_text().splitlines()
    rows = [lines[0] + ",modality"] + [line.replace("images/", f"{labels_csv.parent}/images/", 1) + f",{modality}"
                                       for line in lines[1:]]
    path = folder / f"{modality}.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_retuning_on_clinical_photos_changes_the_clinical_triage_and_the_new_folder_keeps_its_gate(
        two_modality_model_dir, synthetic_parts, synthetic_labels_csv, tmp_path):
    """The bundled model's case: every photo gets its modality's point. Re-tuned on clinical photos, the clinical
    point moves (a melanoma it reassured is referred), the dermoscopic one stays, and --out is a whole model folder
    that predicts with its gate on."""
    out = tmp_path / "retuned"
    result = CliRunner().invoke(app, [
        "operating-point", "--data", str(relabelled(synthetic_labels_csv, tmp_path, "clinical")),
        "--model", str(two_modality_model_dir), "--split", "", "--target-sensitivity", "1.0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "clinical: refer when P(malignant) >= " in result.stdout and "(was 0.9990)" in result.stdout
    assert "pooled: refer when" in result.stdout
    assert "dermoscopic: not re-tuned (no dermoscopic photos in the data)" in result.stderr

    before, after = read_config(two_modality_model_dir), read_config(out)
    assert after.operating_points["dermoscopic"] == before.operating_points["dermoscopic"]
    assert after.operating_points["clinical"].threshold < 0.999 and "clinical" not in before.operating_points["clinical"].chosen_on
    assert "validation (60 images" in after.operating_points["clinical"].chosen_on

    melanomas = [str(r.path) for part in synthetic_parts.values() for r in part if r.node == "melanoma"]
    old, new = Predictor(two_modality_model_dir), Predictor(out)
    assert new.gate is not None and new.gate.fitted and new.modality_recogniser is not None
    was, now = old.analyse(melanomas, modality="clinical"), new.analyse(melanomas, modality="clinical")
    passed = [(a, b) for a, b in zip(was, now) if not b.stopped]
    assert passed, "the test gate stopped every melanoma photo"
    assert all(a.triage == "reassure" and b.triage == "refer" for a, b in passed)  # borderline for the old point
    assert all(b.gate.verdict != "not_checked" and b.ood_score is not None for b in now)
    derm_old, derm_new = old.analyse(melanomas, modality="dermoscopic"), new.analyse(melanomas, modality="dermoscopic")
    assert [a.triage for a in derm_old] == [b.triage for b in derm_new]

    rows = json.loads(CliRunner().invoke(app, ["predict", *melanomas[:2], "--model", str(out), "--modality", "clinical",
                                               "--format", "json", "--no-progress"]).stdout)
    assert [r["quality"] for r in rows] == [b.quality for b in now[:2]] and "not_checked" not in rows[0]["quality"]


def test_retuning_uses_the_engine_the_site_runs(two_modality_model_dir, synthetic_parts, tmp_path):
    from dermlens.study.evaluate import set_operating_point

    records = [r for part in synthetic_parts.values() for r in part]
    fp32 = set_operating_point(two_modality_model_dir, records, 1.0, tmp_path / "fp32", engine="torch", num_workers=0,
                               progress=False)
    bf16 = set_operating_point(two_modality_model_dir, records, 1.0, tmp_path / "bf16", engine="torch",
                               precision="bf16", num_workers=0, progress=False)
    assert "torch fp32" in fp32.tuned["pooled"].chosen_on and "torch bf16" in bf16.tuned["pooled"].chosen_on
    assert bf16.tuned["pooled"].threshold != fp32.tuned["pooled"].threshold  # tuned on bf16's own probabilities
    assert read_config(tmp_path / "bf16").operating_point == bf16.tuned["pooled"]


def test_several_datasets_are_pooled_and_each_modality_gets_its_own_point(
        two_modality_model_dir, synthetic_labels_csv, tmp_path):
    """As training does: dermoscopic and clinical validation sets given together re-tune both points and the pooled
    one on all of them."""
    out = tmp_path / "retuned"
    result = CliRunner().invoke(app, [
        "operating-point", "--data", str(relabelled(synthetic_labels_csv, tmp_path, "clinical")),
        "--data", str(relabelled(synthetic_labels_csv, tmp_path, "dermoscopic")),
        "--model", str(two_modality_model_dir), "--split", "", "--target-sensitivity", "1.0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    after = read_config(out)
    assert "validation (120 images" in after.operating_point.chosen_on
    assert all("validation (60 images" in after.operating_points[m].chosen_on for m in ("clinical", "dermoscopic"))
    assert "not re-tuned" not in result.stderr


@pytest.mark.slow
def test_retuning_for_int8_tunes_the_int8_engine(two_modality_model_dir, synthetic_labels_csv, synthetic_parts, tmp_path):
    """`--engine onnx --precision int8`: the thresholds come from the int8 export's probabilities, the engine a site
    running int8 gets, and the re-tuned folder runs that export."""
    pytest.importorskip("onnxruntime")
    from dermlens.predict.export import export_model

    exported = tmp_path / "exported"
    export_model(two_modality_model_dir, exported, int8=True, calibration_data=synthetic_labels_csv.parent / "images",
                 calibration_size=16)
    out = tmp_path / "retuned"
    result = CliRunner().invoke(app, [
        "operating-point", "--data", str(relabelled(synthetic_labels_csv, tmp_path, "clinical")), "--model",
        str(exported), "--split", "", "--target-sensitivity", "1.0", "--engine", "onnx", "--precision", "int8",
        "--out", str(out), "--workers", "0"])
    assert result.exit_code == 0, result.output
    clinical = read_config(out).operating_points["clinical"]
    assert "onnx int8" in clinical.chosen_on
    int8 = Predictor(out, engine="onnx", precision="int8", gate=False)
    assert int8.engine_name == "onnx int8"
    malignant = [str(r.path) for part in synthetic_parts.values() for r in part
                 if r.node in ("melanoma", "basal_cell_carcinoma")]
    # every malignant photo referred on int8, as it was tuned
    assert all(a.referral == "refer" for a in int8.analyse(malignant, modality="clinical"))
