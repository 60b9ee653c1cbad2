"""The ugly-duckling score on hand-made embeddings: the odd one out ranks first, scores stay in [0, 1]."""
from __future__ import annotations

import numpy as np
import pytest

from dermlens.screen.score import cosine_distance_to_others, ranks, ugly_duckling_scores


def moles(n: int, seed: int = 0, spread: float = 0.05) -> np.ndarray:
    """``n`` similar embeddings: one direction plus a little noise."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=64)
    return base + spread * rng.normal(size=(n, 64)) * np.linalg.norm(base) / 8


def test_the_outlier_gets_rank_one_and_score_one():
    e = moles(8)
    outlier = np.random.default_rng(1).normal(size=64) * 3
    e = np.insert(e, 5, outlier, axis=0)
    scores = ugly_duckling_scores(e)
    assert scores[5] == pytest.approx(1.0)
    assert ranks(scores)[5] == 1
    assert scores.min() == pytest.approx(0.0)
    assert ((scores >= 0) & (scores <= 1)).all()


def test_the_distance_leaves_the_lesion_itself_out_of_the_reference():
    e = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    d = cosine_distance_to_others(e)
    # lesion 2 against the mean of the other two ([1, 0]) is orthogonal: distance 1, not the 1 - cos 45deg it
    # would be if it were part of its own reference
    assert d[2] == pytest.approx(1.0)
    # lesions 0 and 1 each see the mean of [1, 0] and [0, 1]: 45 degrees
    assert d[0] == pytest.approx(1 - np.cos(np.pi / 4))


def test_scale_does_not_matter_only_direction():
    e = moles(6, seed=3)
    scaled = e * np.array([1, 10, 0.1, 3, 7, 0.5])[:, None]
    np.testing.assert_allclose(ugly_duckling_scores(e), ugly_duckling_scores(scaled), atol=1e-9)


def test_a_single_lesion_scores_zero_and_ranks_first():
    scores = ugly_duckling_scores(np.ones((1, 16)))
    assert scores.tolist() == [0.0]
    assert ranks(scores).tolist() == [1]


def test_no_lesions_give_empty_results():
    assert ugly_duckling_scores(np.zeros((0, 16))).shape == (0,)
    assert ranks(np.zeros(0)).shape == (0,)


def test_identical_embeddings_score_zero_without_nan():
    scores = ugly_duckling_scores(np.tile(np.arange(1.0, 9.0), (5, 1)))
    assert np.isfinite(scores).all() and (scores == 0).all()
    assert sorted(ranks(scores).tolist()) == [1, 2, 3, 4, 5]


def test_a_zero_embedding_does_not_produce_nan():
    e = moles(4)
    e[2] = 0
    assert np.isfinite(ugly_duckling_scores(e)).all()


def test_size_weight_mixes_in_relative_size():
    e = np.tile(np.arange(1.0, 9.0), (4, 1))  # all alike: only size can separate them
    sizes = np.array([20.0, 60.0, 25.0, 22.0])
    scores = ugly_duckling_scores(e, sizes, size_weight=0.5)
    assert ranks(scores)[1] == 1
    assert scores[1] == pytest.approx(0.5)
    assert ugly_duckling_scores(e, sizes, size_weight=0.0).max() == 0.0
    with pytest.raises(ValueError, match="size_weight"):
        ugly_duckling_scores(e, sizes, size_weight=1.5)


def test_ranks_are_a_permutation_with_ties_in_input_order():
    assert ranks(np.array([0.2, 0.9, 0.2, 0.5])).tolist() == [3, 1, 4, 2]


def test_embeddings_must_be_two_dimensional():
    with pytest.raises(ValueError, match="n_lesions"):
        cosine_distance_to_others(np.ones(5))


def test_the_k_nearest_score_finds_the_outlier_beside_a_second_kind_of_mole():
    from dermlens.screen.score import ugly_duckling_scores

    rng = np.random.default_rng(0)
    kind_a = rng.normal(0, 0.05, (5, 16)) + np.eye(16)[0] * 3
    kind_b = rng.normal(0, 0.05, (3, 16)) + np.eye(16)[1] * 3  # three of a second kind: no ugly duckling among them
    odd = np.eye(16)[2:3] * 3
    scores = ugly_duckling_scores(np.vstack([kind_a, kind_b, odd]), neighbours=2)
    assert np.argmax(scores) == 8 and scores[5:8].max() < 0.5
    with pytest.raises(ValueError, match="neighbours"):
        ugly_duckling_scores(kind_a, neighbours=-1)
