"""Orientation averaging: the same answer for a photo and its quarter turn or mirror image, wherever a photo is
answered one at a time; off for batch runs when asked (or by default for many photos)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dermlens.cli import app
from dermlens.data.synthetic import SYNTHETIC_CLASSES
from dermlens.data.synthetic.drawing import render_lesion
from dermlens.models import inference
from dermlens.predict import Predictor

TURNS_AND_MIRRORS = [Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270,
                     Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.TRANSPOSE]


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A generated lesion photo of that size."""
    lesion = render_lesion(SYNTHETIC_CLASSES[seed % len(SYNTHETIC_CLASSES)], np.random.default_rng(seed), size=96)
    return lesion.resize((width, height), Image.BILINEAR)


def probabilities(prediction) -> np.ndarray:
    return np.array([prediction.probabilities[n] for n in sorted(prediction.probabilities)])


@pytest.fixture(scope="module")
def averaging(tiny_model_dir) -> Predictor:
    return Predictor(tiny_model_dir, tta=8)


# odd crop margins, portrait, square at another size than the model's (64 px), and a large photo
@pytest.mark.parametrize("width, height", [(101, 75), (75, 101), (90, 90), (300, 227)])
def test_a_turned_or_mirrored_photo_gets_the_same_answer(averaging, width, height):
    image = photo(width, height, seed=width)
    reference, *others = averaging.predict([image] + [image.transpose(t) for t in TURNS_AND_MIRRORS])
    for turn, other in zip(TURNS_AND_MIRRORS, others):
        np.testing.assert_allclose(probabilities(other), probabilities(reference), atol=1e-5, err_msg=str(turn))
        assert (other.triage, other.quality, other.modality) == (reference.triage, reference.quality, reference.modality)


def test_without_averaging_a_quarter_turn_changes_the_probabilities(tiny_model_dir):
    """What the averaging is for: the network alone is not invariant (else the test above would prove nothing)."""
    single = Predictor(tiny_model_dir, tta=1)
    image = photo(101, 75)
    straight, turned = single.predict([image, image.transpose(Image.Transpose.ROTATE_90)])
    assert np.abs(probabilities(straight) - probabilities(turned)).max() > 1e-4


def test_an_old_model_config_still_loads_and_averages_exactly(tiny_model_dir, tmp_path):
    """A config from before the gate, per-modality operating points and the eval geometry field."""
    old = tmp_path / "old-model"
    shutil.copytree(tiny_model_dir, old)
    config = json.loads((old / "config.json").read_text())
    for key in ("gate", "operating_points"):
        config.pop(key, None)
    config["preprocessing"].pop("resize", None)
    (old / "config.json").write_text(json.dumps(config))
    predictor = Predictor(old, tta=8)
    image = photo(101, 75)
    a, b = predictor.predict([image, image.transpose(Image.Transpose.ROTATE_90)])
    assert a.error == "" and a.triage in ("refer", "reassure")
    np.testing.assert_allclose(probabilities(b), probabilities(a), atol=1e-5)


def run_predict(model_dir, files, *options) -> list[dict]:
    result = CliRunner().invoke(app, ["predict", "--model", str(model_dir), "--workers", "0", "--no-progress",
                                      "--format", "json", *options, *map(str, files)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("turned")
    image = photo(101, 75, seed=3)
    files = [folder / "a.png", folder / "a_turned.png", folder / "b.png"]
    image.save(files[0])
    image.transpose(Image.Transpose.ROTATE_90).save(files[1])
    photo(80, 60, seed=4).save(files[2])
    return files


def p_malignant(rows: list[dict]) -> list[float]:
    return [row["probabilities"]["malignant"] for row in rows]


def test_predict_averages_orientations_for_a_few_photos_and_tta_1_turns_it_off(tiny_model_dir, photo_files):
    default = p_malignant(run_predict(tiny_model_dir, photo_files))
    assert default[0] == pytest.approx(default[1], abs=1e-5)
    off = p_malignant(run_predict(tiny_model_dir, photo_files, "--tta", "1"))
    assert abs(off[0] - off[1]) > 1e-5  # really off: the quarter turn shows again


def test_predict_on_more_photos_than_one_at_a_time_defaults_to_one_view(tiny_model_dir, photo_files, monkeypatch):
    monkeypatch.setattr(inference, "ONE_AT_A_TIME", 2)  # three photos are a batch run now
    batch = p_malignant(run_predict(tiny_model_dir, photo_files))
    assert abs(batch[0] - batch[1]) > 1e-5
    asked = p_malignant(run_predict(tiny_model_dir, photo_files, "--tta", "8"))
    assert asked[0] == pytest.approx(asked[1], abs=1e-5)


def test_default_tta_is_all_views_for_a_few_photos_one_for_many():
    assert inference.default_tta(1) == inference.ORIENTATION_VIEWS == 8
    assert inference.default_tta(inference.ONE_AT_A_TIME) == 8
    assert inference.default_tta(inference.ONE_AT_A_TIME + 1) == 1
