"""The learnt ugly-duckling score and its parts: k-nearest distances, the within-patient whitened space, the
descriptors of a crop, and the either-head lesion filter."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from dermlens.screen.describe import NAMES, describe
from dermlens.screen.lesion_filter import keep_lesions
from dermlens.screen.lesion_head import LesionHead
from dermlens.screen.score import knn_distance, mixed_scores
from dermlens.screen.ugly_duckling import DucklingRanker, DucklingSpace


def test_knn_distance_sees_an_outlier_but_not_two_kinds_of_moles():
    rng = np.random.default_rng(0)
    two_kinds = np.vstack([rng.normal([5, 0], 0.1, (4, 2)), rng.normal([0, 5], 0.1, (4, 2))])
    d = knn_distance(two_kinds, k=2, metric="euclidean")
    assert d.max() < 0.5  # every mole has look-alikes
    with_outlier = np.vstack([two_kinds, [[5, 5]]])
    assert np.argmax(knn_distance(with_outlier, k=2, metric="euclidean")) == 8
    assert knn_distance(np.ones((1, 3))).tolist() == [0.0]
    with pytest.raises(ValueError, match="metric"):
        knn_distance(two_kinds, metric="manhattan")


def test_mixed_scores_weigh_min_max_scaled_components():
    parts = {"a": np.array([0.0, 1.0, 2.0]), "b": np.array([10.0, 0.0, 5.0])}
    assert mixed_scores(parts, {"a": 1.0, "b": 0.0}).tolist() == [0.0, 0.5, 1.0]
    assert mixed_scores(parts, {"a": 1.0, "b": 1.0}).tolist() == [1.0, 0.5, 1.5]


def synthetic_patients(rng, n=40):
    """8-d embeddings: dimension 0 varies wildly among one patient's ordinary moles (lighting, hair); the planted
    lesion differs along dimension 1, by less than that nuisance."""
    patients = []
    for _ in range(n):
        e = rng.normal(0, 0.2, (7, 8))
        e[:, 0] += rng.normal(0, 3.0, 7)
        e[0, 1] += 2.0  # the planted one
        planted = np.zeros(7, bool)
        planted[0] = True
        patients.append({"embedding": e, "descriptors": rng.normal(0, 1, (7, len(NAMES))),
                         "p_malignant": rng.uniform(0, 0.2, 7), "diameter": rng.uniform(20, 40, 7), "planted": planted})
    return patients


def test_the_whitened_space_shrinks_what_varies_among_a_patients_ordinary_moles():
    rng = np.random.default_rng(0)
    train = synthetic_patients(rng)
    ordinary = np.concatenate([p["embedding"][1:] for p in train])
    ids = np.repeat(np.arange(len(train)), 6)
    space = DucklingSpace.fit(ordinary, ids, dims=8)
    test = synthetic_patients(np.random.default_rng(1), 30)
    plain = np.mean([np.argmax(knn_distance(p["embedding"], 3, "euclidean")) == 0 for p in test])
    whitened = np.mean([np.argmax(knn_distance(space.transform(p["embedding"]), 3, "euclidean")) == 0 for p in test])
    assert whitened >= 0.9 > 0.5 > plain


def test_the_ranker_puts_the_planted_lesion_first_and_survives_a_save(tmp_path):
    ranker = DucklingRanker.fit(synthetic_patients(np.random.default_rng(0)))
    test = synthetic_patients(np.random.default_rng(2), 30)
    top1 = np.mean([np.argmax(ranker.scores(p["embedding"], p["descriptors"], p["p_malignant"], p["diameter"])) == 0
                    for p in test])
    assert top1 >= 0.9
    again = DucklingRanker.load(ranker.save(tmp_path))
    p = test[0]
    assert np.allclose(again.scores(p["embedding"], p["descriptors"], p["p_malignant"], p["diameter"]),
                       ranker.scores(p["embedding"], p["descriptors"], p["p_malignant"], p["diameter"]), atol=1e-5)
    assert ranker.scores(p["embedding"][:1], p["descriptors"][:1], p["p_malignant"][:1], p["diameter"][:1]).tolist() == [0.0]
    (tmp_path / "ugly_duckling.json").write_text("{")
    with pytest.raises(ValueError, match="unreadable"):
        DucklingRanker.load(tmp_path)


def crop_with(shape_drawer, skin=(205, 165, 140), ink=(90, 60, 45)):
    crop = np.full((96, 96, 3), skin, np.uint8)
    mask = np.zeros((96, 96), np.uint8)
    shape_drawer(mask)
    crop[mask > 0] = ink
    return crop


def test_descriptors_tell_a_round_dark_mole_from_an_irregular_one():
    d = dict(zip(NAMES, describe(crop_with(lambda m: cv2.circle(m, (48, 48), 20, 255, -1)))))
    assert d["lightness_contrast"] < -20 and d["compactness"] > 0.7 and d["asymmetry"] < 0.15
    irregular = crop_with(lambda m: cv2.fillPoly(m, [np.array([[30, 30], [70, 35], [50, 48], [66, 70], [28, 62]])], 255))
    e = dict(zip(NAMES, describe(irregular)))
    assert e["compactness"] < d["compactness"] and e["asymmetry"] > d["asymmetry"]
    assert describe(np.full((40, 40, 3), 128, np.uint8)).shape == (len(NAMES),)  # a flat crop: no crash


def head_with(coef, intercept: float, threshold: float) -> LesionHead:
    """A lesion head with known coefficients on unstandardised features."""
    head = LesionHead()
    head._set([False, True], np.zeros(len(coef)), np.ones(len(coef)), coef, intercept)
    head.threshold = threshold
    return head


def test_a_candidate_either_head_accepts_is_kept():
    emb_head = head_with(np.array([1.0, 0.0]), 0.0, threshold=0.5)
    n_desc = 2 * (len(NAMES) + 2)
    weight = np.zeros(n_desc)
    weight[len(NAMES)] = 1.0  # the descriptor head reads log contrast
    desc_head = head_with(weight, -np.log(5.0), threshold=0.5)
    embeddings = np.array([[2.0, 0], [-2.0, 0], [-2.0, 0]])
    descriptors = np.zeros((3, len(NAMES)))
    contrast, diameter = np.array([1.0, 20.0, 1.0]), np.full(3, 20.0)
    keep, p = keep_lesions(emb_head, desc_head, embeddings, descriptors, contrast, diameter)
    assert keep.tolist() == [True, True, False] and p[0] > 0.5 > p[1]
    assert keep_lesions(emb_head, None, embeddings, descriptors, contrast, diameter)[0].tolist() == [True, False, False]
