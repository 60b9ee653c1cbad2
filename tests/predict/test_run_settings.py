"""A results file records the settings that made its rows, and a resume with other settings is refused, naming
each setting that changed (the record and the comparison: ``dermlens.predict.run_settings``)."""
from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from dermlens.cli import app
from dermlens.predict.run_settings import (
    SettingsChangedError, changed_settings, check_unchanged, prediction_settings, read_settings, settings_path,
    write_settings,
)


def run(model_dir, *args):
    return CliRunner().invoke(app, ["predict", "--model", str(model_dir), "--workers", "0", "--no-progress",
                                    *map(str, args)])


@pytest.fixture()
def photos(tmp_path, image_cases):
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(3):
        (folder / f"p{k}.png").write_bytes(image_cases.good["rgb"][0].read_bytes())
    return folder


def test_changed_settings_names_each_difference_and_ignores_what_makes_no_row_differ():
    old = {"tta": 1, "modality": "auto", "gate": True, "engine": "onnx fp32", "model_weights_sha256": "a" * 64,
           "model_dir": "/x", "dermlens_version": "0.1.0"}
    assert changed_settings(old, dict(old)) == []
    assert changed_settings(old, {**old, "model_dir": "/moved", "dermlens_version": "0.2.0"}) == []
    new = {**old, "tta": 4, "modality": "clinical", "model_weights_sha256": "b" * 64}
    assert sorted(changed_settings(old, new)) == ["modality: auto -> clinical",
                                                  "model weights: aaaaaaaaaaaa -> bbbbbbbbbbbb", "tta: 1 -> 4"]
    assert changed_settings({k: v for k, v in old.items() if k != "gate"}, old) == ["gate on: none -> True"]
    assert changed_settings(old, {k: v for k, v in old.items() if k != "engine"}) == ["engine: onnx fp32 -> none"]


def test_the_record_sits_beside_any_results_file_and_is_checked(tmp_path):
    results = tmp_path / "predictions.parquet"  # any format: the record is a JSON file beside it
    results.write_bytes(b"rows")
    with pytest.raises(SettingsChangedError, match="not recorded"):
        check_unchanged(results, {"tta": 1})
    write_settings(results, {"tta": 1})
    assert settings_path(results) == tmp_path / "predictions.parquet.settings.json"
    assert read_settings(results) == {"tta": 1}
    check_unchanged(results, {"tta": 1})
    with pytest.raises(SettingsChangedError, match="tta: 1 -> 2"):
        check_unchanged(results, {"tta": 2})


def test_a_predictor_s_settings_cover_what_changes_a_row(tiny_model_dir, tmp_path):
    from dermlens.predict import Predictor

    base = prediction_settings(Predictor(tiny_model_dir, engine="torch"), None)
    assert base["engine"] == "torch fp32" and base["tta"] == 1 and base["modality"] == "auto" and base["gate"]
    assert len(base["model_weights_sha256"]) == 64 and len(base["model_config_sha256"]) == 64
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    state = load_file(str(other / "model.safetensors"))
    save_file({k: v * 1.01 if v.is_floating_point() else v for k, v in state.items()}, str(other / "model.safetensors"))
    retuned = json.loads((other / "config.json").read_text())
    retuned["operating_point"]["threshold"] = 0.123  # `dermlens operating-point` changes triage, not the weights
    (other / "config.json").write_text(json.dumps(retuned))
    changed = changed_settings(base, prediction_settings(Predictor(other, engine="torch", tta=2, gate=False), "clinical"))
    assert sorted(c.split(":")[0] for c in changed) == ["gate on", "modality", "model config (classes, "
                                                        "preprocessing, operating points, gate thresholds)",
                                                        "model weights", "tta"]


def test_predict_resume_refuses_other_settings_naming_each_and_touches_nothing(tiny_model_dir, photos, tmp_path):
    out = tmp_path / "out"
    assert run(tiny_model_dir, photos / "p0.png", "--out", out, "--engine", "torch").exit_code == 0
    target = out / "predictions.csv"
    record = json.loads(settings_path(target).read_text())
    assert record["tta"] == 8 and record["modality"] == "auto" and record["gate"] is True  # one photo: all views
    assert record["engine"] == "torch fp32"
    before = target.read_bytes()

    mixed = run(tiny_model_dir, photos, "--out", out, "--engine", "torch", "--resume", "--tta", "4",
                "--modality", "clinical", "--no-gate")
    assert mixed.exit_code == 2, mixed.output
    message = mixed.stderr.strip()
    assert len(message.splitlines()) == 1
    for change in ("tta: 8 -> 4", "modality: auto -> clinical", "gate on: True -> False"):
        assert change in message
    assert "engine" not in message  # only what changed is named
    assert target.read_bytes() == before

    other_engine = run(tiny_model_dir, photos, "--out", out, "--engine", "onnx", "--resume")
    assert other_engine.exit_code == 2 and "engine: torch fp32 -> onnx fp32" in other_engine.stderr
    assert target.read_bytes() == before

    # without --tta the resumed run keeps the views it recorded
    same = run(tiny_model_dir, photos, "--out", out, "--engine", "torch", "--resume")
    assert same.exit_code == 0, same.output
    assert "1 already done" in same.stderr and target.read_bytes().startswith(before)

    replaced = run(tiny_model_dir, photos, "--out", out, "--engine", "torch", "--tta", "2", "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert json.loads(settings_path(target).read_text())["tta"] == 2  # the record follows the file it describes


def test_a_results_file_without_a_record_is_not_resumed(tiny_model_dir, photos, tmp_path):
    out = tmp_path / "out"
    assert run(tiny_model_dir, photos / "p0.png", "--out", out, "--format", "json").exit_code == 0
    settings_path(out / "predictions.json").unlink()
    refused = run(tiny_model_dir, photos, "--out", out, "--format", "json", "--resume")
    assert refused.exit_code == 2 and "settings were not recorded" in refused.stderr
