"""The Python API: load a model once, predict on paths, PIL images or arrays; bad images are reported, not fatal."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dermlens.predict import predictor as predict_module
from dermlens.models import TaxonomyMismatchError
from dermlens.predict import NoModelError, Prediction, Predictor
from dermlens.taxonomy import Taxonomy


def probs(prediction: Prediction) -> np.ndarray:
    assert not prediction.error, prediction.error
    return np.array(list(prediction.probabilities.values()))


def test_paths_pil_images_and_arrays_give_the_same_answer(predictor, image_cases):
    path = image_cases.good["rgb"][0]
    image = Image.open(path)
    pixels = np.asarray(image.convert("RGB"))
    inputs = [str(path), path, image, pixels, pixels.astype(np.float32) / 255, pixels.astype(np.uint16) * 257,
              path.read_bytes()]
    predictions = predictor.predict(inputs)
    assert [p.image for p in predictions] == [str(path), str(path), "<image 2>", "<image 3>", "<image 4>",
                                              "<image 5>", "<image 6>"]
    reference = probs(predictions[0])
    for prediction in predictions[1:]:
        np.testing.assert_allclose(probs(prediction), reference, atol=1e-6)
        assert prediction.triage == predictions[0].triage
    assert predictor.predict_one(pixels, name="mine").image == "mine"
    assert predictor.predict([image], names=["photo"])[0].image == "photo"


def test_every_taxonomy_node_gets_a_probability_consistent_with_the_tree(predictor, synthetic_parts):
    tax = predictor.taxonomy
    classes = predictor.config.classes
    paths = [str(r.path) for r in synthetic_parts["test"][:6]]
    all_class_probs = predictor.class_probabilities(torch.stack([predictor.preprocess(p) for p in paths]))
    for prediction, class_probs in zip(predictor.predict(paths), all_class_probs):
        assert class_probs.sum() == pytest.approx(1.0, abs=1e-9)
        p = prediction.probabilities
        assert list(p) == list(tax)  # every node, in taxonomy order
        assert p["root"] == pytest.approx(1.0, abs=1e-9)
        assert all(0 <= v <= 1 + 1e-9 for v in p.values())
        for node in tax:
            # A parent holds its children's probability plus that of any training class sitting at it.
            own = sum(q for c, q in zip(classes, class_probs) if c.node == node)
            children = sum(p[child] for child in tax.children(node))
            assert p[node] == pytest.approx(children + own, abs=1e-9), node
        assert p["benign"] + p["malignant"] + p["non_neoplastic"] == pytest.approx(1.0, abs=1e-9)
        for c, q in zip(classes, class_probs):
            assert p[c.node] == pytest.approx(q, abs=1e-9)


def test_top5_and_triage(predictor, image_cases):
    prediction = predictor.predict_one(image_cases.good["rgb"][0])
    n_classes = len(predictor.config.classes)
    assert len(prediction.top5) == min(5, n_classes)
    values = [v for _, v in prediction.top5]
    assert values == sorted(values, reverse=True)
    for node, value in prediction.top5:
        assert node in predictor.config.class_nodes
        assert value == pytest.approx(prediction.probabilities[node], abs=1e-9)
    op = predictor.operating_point
    expected = "refer" if prediction.probabilities[op.node] >= op.threshold else "reassure"
    assert prediction.triage == expected
    d = prediction.to_dict()
    assert set(d) >= {"image", "error", "triage", "probabilities", "top5"}
    assert d["error"] == "" and d["top5"][0] == {"node": prediction.top5[0][0], "probability": prediction.top5[0][1]}


def test_triage_follows_the_stored_operating_point(tiny_model_dir, image_cases):
    predictor = Predictor(tiny_model_dir)
    path = image_cases.good["rgb"][0]
    p_malignant = predictor.predict_one(path).probabilities["malignant"]
    predictor.config.operating_point.threshold = p_malignant  # at the threshold: refer
    assert predictor.predict_one(path).triage == "refer"
    predictor.config.operating_point.threshold = p_malignant + 1e-6
    assert predictor.predict_one(path).triage == "reassure"


@pytest.mark.parametrize("case", [
    "grayscale", "grayscale_16_bit", "rgb_16_bit", "cmyk_tiff", "cmyk_jpeg", "rgba",
    "exif_rotated_90", "exif_rotated_180", "exif_rotated_270", "exif_rotated_jpeg",
])
def test_any_mode_or_orientation_is_classified_like_its_rgb_upright_equivalent(predictor, image_cases, case):
    path, equivalent, tolerance = image_cases.good[case]
    got, expected = predictor.predict([path, equivalent])
    np.testing.assert_allclose(probs(got), probs(expected), atol=tolerance)


def test_the_orientation_check_can_fail(predictor, image_cases):
    """Ignoring the EXIF tag would change the answer by far more than the tolerances above."""
    upright, ignored = predictor.predict([image_cases.good["rgb"][0], image_cases.uncorrected_exif6])
    assert np.abs(probs(upright) - probs(ignored)).max() > 1e-3


@pytest.mark.parametrize("case", ["empty", "truncated", "corrupt", "not_an_image", "over_100_megapixels", "missing"])
def test_a_bad_file_gets_an_error_and_the_batch_goes_on(predictor, image_cases, case):
    bad, words = image_cases.bad[case]
    good = image_cases.good["rgb"][0]
    before, failed, after = predictor.predict([good, bad, good])
    assert failed.image == str(bad)
    for word in words:
        assert word in failed.error
    assert failed.triage is None and failed.probabilities == {} and failed.top5 == []
    alone = probs(predictor.predict_one(good))
    np.testing.assert_allclose(probs(before), alone, atol=1e-6)
    np.testing.assert_allclose(probs(after), alone, atol=1e-6)


def test_bad_arrays_are_reported_too(predictor):
    wrong_shape, out_of_range = np.zeros((8, 8, 2), np.uint8), np.full((8, 8, 3), 2.0, np.float32)
    a, b = predictor.predict([wrong_shape, out_of_range])
    assert "array shape" in a.error and "[0, 1]" in b.error


def test_predict_records_matches_predict_on_paths(predictor, synthetic_parts):
    records = synthetic_parts["val"][:5]
    class_probs = predictor.predict_records(records, batch_size=2, num_workers=0, progress=False)
    node_probs = predictor.node_probabilities(class_probs)
    direct = np.stack([probs(p) for p in predictor.predict([str(r.path) for r in records])])
    np.testing.assert_allclose(node_probs, direct, atol=1e-6)


def test_tta_over_the_dihedral_views_makes_flips_irrelevant(tiny_model_dir, image_cases):
    square = image_cases.source.crop((0, 0, 64, 64))  # the model's size: no resampling, which is not exactly
    # symmetric under rotation (Pillow rounds to 8 bits between its horizontal and vertical passes)
    flipped = square.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    rotated = square.transpose(Image.Transpose.ROTATE_90)
    with_tta = Predictor(tiny_model_dir, tta=8)
    a, b, c = with_tta.predict([square, flipped, rotated])
    np.testing.assert_allclose(probs(b), probs(a), atol=1e-5)
    np.testing.assert_allclose(probs(c), probs(a), atol=1e-5)


def test_without_a_bundled_model_the_error_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setattr(predict_module, "BUNDLED_MODEL_DIR", tmp_path / "weights")
    with pytest.raises(NoModelError, match="dermlens train"):
        Predictor()


def test_a_model_of_another_taxonomy_is_refused(tiny_model_dir):
    other = Taxonomy.from_dict({"version": "x", "tree": {"id": "root", "name": "Root", "children": [
        {"id": "melanoma", "name": "Melanoma", "children": []}]}})
    with pytest.raises(TaxonomyMismatchError):
        Predictor(tiny_model_dir, taxonomy=other)


def test_model_is_loaded_once_and_reused(predictor, image_cases):
    model = predictor.model
    predictor.predict([image_cases.good["rgb"][0]] * 3)
    assert predictor.model is model and not model.training
    assert Path(predictor.model_dir).name == "model"


def test_train_save_load_predict_round_trip(tiny_model, predictor, synthetic_parts):
    """The predictor answers exactly what the saved network says under the preprocessing stored with it."""
    from dermlens.data.io import load_image
    from dermlens.data.transforms import build_eval_transform
    from dermlens.models import load_model
    from dermlens.taxonomy import tree_sum_matrix

    model, config = load_model(tiny_model.model_dir)
    assert config.preprocessing.size == 64 and len(config.classes) == 5  # what the fixture trained
    assert config.training["history"] == tiny_model.history
    transform = build_eval_transform(config.preprocessing)
    records = synthetic_parts["test"]
    batch = torch.stack([transform(load_image(r.path)) for r in records])
    with torch.no_grad():
        class_probs = model(batch).softmax(-1).double().numpy()
    expected = class_probs @ tree_sum_matrix(predictor.taxonomy, config.classes).T
    got = np.stack([probs(p) for p in predictor.predict([str(r.path) for r in records])])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got.std(0).max() > 0.01  # the answers depend on the image
