"""PET end to end through the CLI (simulate, train both networks, evaluate), resume, and the baselines."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dermlens.cli import app
from dermlens.pet.baselines import threshold_max, tumour_voi
from dermlens.pet.evaluation import per_image_scores
from dermlens.pet.dataset import load_dataset
from dermlens.pet.training import PETTrainConfig, load_pet_model, predict_fractions, train_pet

runner = CliRunner()
# A coarse grid keeps simulation cheap; the field of view (32 x 8 mm) is the default one.
SIM = ["--grid", "32", "--pixel-mm", "8", "--fwhm-mm", "10", "--quiet"]
TRAIN = ["--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "8", "--quiet"]


def _ok(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("pet")
    _ok(["pet", "simulate", "--out", str(root / "train"), "--n", "24", "--seed", "0", *SIM])
    _ok(["pet", "simulate", "--out", str(root / "test"), "--n", "16", "--seed", "1", *SIM])
    for method in ("fraction", "binary"):
        _ok(["pet", "train", "--data", str(root / "train"), "--out", str(root / method), "--method", method, *TRAIN])
    result = _ok(["pet", "evaluate", "--data", str(root / "test"), "--models", str(root / "fraction"),
                  "--models", str(root / "binary"), "--out", str(root / "eval"), "--n-boot", "50", "--quiet"])
    return root, result.output


def test_evaluate_writes_metrics_for_every_method(study):
    root, output = study
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    for method in ("fraction", "threshold40", "binary_unet"):
        entry = metrics[method]
        assert 0.0 <= entry["fuzzy_dice"] <= 1.0 and entry["area_error"] >= 0.0
        for name in ("fuzzy_dice", "area_error"):
            low, high = entry[f"{name}_ci95"]
            assert low <= entry[name] + 1e-12 and entry[name] <= high + 1e-12
        assert entry["n"] == 16
        assert sum(row["n"] for row in entry["by_diameter"]) == 16
        assert sum(row["n"] for row in entry["by_dose"]) == 16
        assert method in output
    assert set(metrics["comparisons"]) == {"fraction_minus_threshold40", "fraction_minus_binary_unet"}
    assert metrics["test_set"]["n_images"] == 16 and metrics["test_set"]["simulator"]["grid"] == 32
    page = (root / "eval" / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4 and "tumour diameter / FWHM" in page


def test_models_are_safetensors_with_their_method(study):
    root, _ = study
    for method in ("fraction", "binary"):
        assert (root / method / "model.safetensors").is_file()
        model, config = load_pet_model(root / method)
        assert config["method"] == method and config["n_train"] + config["n_val"] == 24
        assert len((root / method / "metrics.jsonl").read_text().splitlines()) == 1
    with pytest.raises(FileNotFoundError, match="no trained PET model"):
        load_pet_model(root / "train")


def test_training_refuses_a_used_folder_and_a_resume_with_other_settings(study):
    root, _ = study
    before = (root / "fraction" / "model.safetensors").read_bytes()
    command = ["pet", "train", "--data", str(root / "train"), "--out", str(root / "fraction")]
    result = runner.invoke(app, [*command, *TRAIN])
    assert result.exit_code == 2 and "--resume" in result.output and "--overwrite" in result.output
    assert str(root / "fraction") in result.output and "Traceback" not in result.output
    longer = [a if a != "1" else "2" for a in TRAIN]  # another schedule: the cosine would jump back up
    result = runner.invoke(app, [*command, "--resume", *longer])
    assert result.exit_code == 2 and "--epochs 1 -> 2" in result.output
    _ok([*command, "--resume", *TRAIN])
    assert len((root / "fraction" / "metrics.jsonl").read_text().splitlines()) == 1  # finished: nothing more to do
    assert (root / "fraction" / "model.safetensors").read_bytes() == before


def test_a_killed_run_resumes_to_the_uninterrupted_result_and_overwrite_starts_again(study, tmp_path, killed_after_first_checkpoint):
    from safetensors.torch import load_file

    root, _ = study
    cfg = PETTrainConfig(epochs=2, max_steps_per_epoch=2, batch_size=8, base_channels=8)
    train_pet(root / "train", tmp_path / "straight", cfg, progress=False)
    with killed_after_first_checkpoint():  # a kill right after epoch 1's checkpoint
        train_pet(root / "train", tmp_path / "killed", cfg, progress=False)
    assert not (tmp_path / "killed" / "model.safetensors").exists()  # a model file means a finished run
    train_pet(root / "train", tmp_path / "killed", cfg, resume=True, progress=False)
    straight, resumed = load_file(str(tmp_path / "straight" / "model.safetensors")), \
        load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    rows = [json.loads(line) for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]

    train_pet(root / "train", tmp_path / "killed", replace(cfg, epochs=1), overwrite=True, progress=False)
    assert len((tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()) == 1
    assert load_pet_model(tmp_path / "killed")[1]["train"]["epochs"] == 1


def test_training_learns_to_find_the_tumour(study, tmp_path):
    root, _ = study
    cfg = PETTrainConfig(epochs=4, max_steps_per_epoch=3, batch_size=8, lr=1e-2, base_channels=8, val_fraction=0)
    train_pet(root / "train", tmp_path / "run", cfg, progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    # After a dozen steps it already tells tumour from background (the output starts at the prior everywhere).
    data = load_dataset(root / "train")
    predicted = predict_fractions(load_pet_model(tmp_path / "run")[0], data.images)
    assert predicted[data.fractions > 0.5].mean() > 5 * predicted[data.fractions == 0].mean()


def test_threshold40_inside_the_box_on_a_hand_made_image():
    image = np.ones((10, 10))
    image[4:6, 4:6] = 10.0
    image[3, 4], image[6, 4] = 4.0, 3.9  # exactly 40% of the box's maximum, and just below
    image[0, 0] = 50.0  # hot, but outside the box
    truth = np.zeros((10, 10))
    truth[4:6, 4:6] = 1.0
    voi = tumour_voi(truth, margin=2)
    assert voi.sum() == 36 and voi[2:8, 2:8].all()
    mask = threshold_max(image, voi)
    assert mask.sum() == 5 and mask[3, 4] == 1 and mask[6, 4] == 0 and mask[0, 0] == 0
    with pytest.raises(ValueError, match="no tumour"):
        tumour_voi(np.zeros((4, 4)), 1)


def test_perfect_predictions_score_perfectly():
    truth = np.zeros((3, 8, 8))
    truth[:, 2:5, 3:6] = 0.75
    truth[1, 2, 2] = 0.2
    scores = per_image_scores(truth, truth)
    np.testing.assert_allclose(scores["fuzzy_dice"], 1.0)
    np.testing.assert_allclose(scores["area_error"], 0.0)
    half = per_image_scores(truth / 2, truth)
    np.testing.assert_allclose(half["area_bias"], -0.5)
