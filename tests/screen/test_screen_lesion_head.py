"""The lesion/not-lesion head: safetensors + JSON round trip, tied to the model it reads, bundled and usable."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dermlens.predict import BUNDLED_MODEL_DIR
from dermlens.screen.lesion_head import BUNDLED_HEAD_DIR, HeadMismatchError, LesionHead, fit_lesion_head, model_digest


def separable(n=120, d=16, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2 == 0
    x = rng.normal(size=(n, d)) + np.where(y[:, None], 1.5, -1.5) * (np.arange(d) < 3)
    return x, y, np.arange(n) // 4  # 4 candidates per "photo"


def test_fit_separates_and_the_threshold_keeps_the_target_recall():
    x, y, groups = separable()
    head = fit_lesion_head(x, y, groups, target_recall=0.95)
    p = head.probability(x)
    assert ((p >= head.threshold) == y).mean() > 0.9
    v = head.info["validation"]
    assert v["lesion_recall"] >= 0.9 and v["auc"] > 0.95


def test_fit_refuses_one_class_only():
    x, _, groups = separable()
    with pytest.raises(ValueError, match="both"):
        fit_lesion_head(x, np.ones(len(x), bool), groups)


def test_save_and_load_give_the_same_probabilities(tmp_path):
    x, y, groups = separable()
    head = fit_lesion_head(x, y, groups)
    head.info["model_digest"] = "0123456789abcdef"
    loaded = LesionHead.load(head.save(tmp_path / "head"))
    np.testing.assert_allclose(loaded.probability(x), head.probability(x), rtol=1e-5, atol=1e-6)
    assert loaded.threshold == pytest.approx(head.threshold)
    assert json.loads((tmp_path / "head" / "lesion_head.json").read_text())["info"]["model_digest"] == "0123456789abcdef"


def test_missing_or_broken_head_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="lesion_head"):
        LesionHead.load(tmp_path)
    head = LesionHead.from_tensors(np.zeros(4), 0.0, np.zeros(4), np.ones(4))
    head.save(tmp_path)
    (tmp_path / "lesion_head.json").write_text("{not json")
    with pytest.raises(ValueError, match=str(tmp_path)):
        LesionHead.load(tmp_path)


def test_features_of_the_wrong_width_are_refused():
    head = LesionHead.from_tensors(np.zeros(4), 0.0, np.zeros(4), np.ones(4))
    with pytest.raises(HeadMismatchError, match="4"):
        head.probability(np.zeros((2, 5)))


def test_a_head_for_another_model_is_refused(tmp_path):
    head = LesionHead.from_tensors(np.zeros(4), 0.0, np.zeros(4), np.ones(4), info={"model_digest": "ffffffffffffffff"})
    with pytest.raises(HeadMismatchError, match="train-head"):
        head.check_model(BUNDLED_MODEL_DIR, tmp_path)


def test_the_bundled_head_reads_the_bundled_model():
    if not (BUNDLED_HEAD_DIR / "lesion_head.safetensors").is_file():
        pytest.fail(f"{BUNDLED_HEAD_DIR}: the bundled lesion head is missing")
    head = LesionHead.load(BUNDLED_HEAD_DIR)
    assert head.n_features_in_ == 1280
    assert head.info["model_digest"] == model_digest(BUNDLED_MODEL_DIR)
    head.check_model(BUNDLED_MODEL_DIR)
    assert 0 < head.threshold < 1


def test_the_bundled_folder_holds_the_descriptor_head_of_the_either_rule():
    from dermlens.screen.describe import NAMES
    from dermlens.screen.lesion_filter import load_descriptor_head

    head = load_descriptor_head(BUNDLED_HEAD_DIR)
    assert head is not None, f"{BUNDLED_HEAD_DIR}/descriptor: the bundled descriptor head is missing"
    assert head.n_features_in_ == 2 * (len(NAMES) + 2) and 0 < head.threshold < 1
