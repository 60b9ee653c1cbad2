import numpy as np
import pytest

from dermlens.taxonomy.infer import TreeSum
from dermlens.taxonomy import TrainingClass, node_probabilities, tree_sum_matrix

T = TrainingClass

# small_tree (conftest): root > a > (a1, a2); root > b > (b1 > (b1x, b1y), b2); root > c
CLASSES = [T("a", 5), T("b", 4, own_only=True), T("b1", 3), T("b2", 3)]


def test_tree_sum_matrix(small_tree):
    matrix = tree_sum_matrix(small_tree, CLASSES)
    rows = {node_id: tuple(matrix[i]) for i, node_id in enumerate(small_tree)}
    assert matrix.shape == (10, 4)
    assert rows["root"] == (1, 1, 1, 1)
    assert rows["a"] == (1, 0, 0, 0)
    assert rows["a1"] == (0, 0, 0, 0)  # a's class lies above a1, not at or below it
    assert rows["b"] == (0, 1, 1, 1)
    assert rows["b1"] == (0, 0, 1, 0)  # the own_only class at b does not reach b's children
    assert rows["b2"] == (0, 0, 0, 1)
    assert rows["c"] == (0, 0, 0, 0)


def test_node_probabilities_single_and_batch(small_tree):
    probs = np.array([0.1, 0.2, 0.3, 0.4])
    single = node_probabilities(small_tree, CLASSES, probs)
    assert single.node_ids == tuple(small_tree)
    assert single["root"] == pytest.approx(1.0)
    assert single["b"] == pytest.approx(0.9)
    assert single["b1"] == pytest.approx(0.3)
    assert single["b1x"] == 0.0 and single["c"] == 0.0
    assert single.to_dict()["a"] == pytest.approx(0.1)
    top = single.select(small_tree.level_nodes(1))
    assert top.node_ids == ("a", "b", "c")
    np.testing.assert_allclose(top.values, [0.1, 0.9, 0.0])

    batch = node_probabilities(small_tree, CLASSES, np.stack([probs, probs[::-1]]))
    assert batch.values.shape == (2, 10)
    np.testing.assert_allclose(batch["b"], [0.9, 0.6])
    assert batch.to_dict(row=1)["a"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="row="):
        batch.to_dict()
    with pytest.raises(KeyError, match="zzz"):
        batch["zzz"]


def test_tree_sum_is_the_matrix_product_with_one_node_column(small_tree):
    tree_sum = TreeSum(small_tree, CLASSES)
    np.testing.assert_array_equal(tree_sum.matrix, tree_sum_matrix(small_tree, CLASSES))
    probs = np.array([[0.25] * 4, [0.7, 0.1, 0.1, 0.1]])
    nodes = tree_sum(probs)
    np.testing.assert_allclose(tree_sum.node(probs, "b"), nodes[:, list(small_tree).index("b")])
    assert tree_sum(probs[0])[list(small_tree).index("b")] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="softmax"):
        tree_sum(-probs)
    with pytest.raises(KeyError, match="zzz"):
        tree_sum.node(probs, "zzz")


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.ones(3) / 3, r"shape \(4,\)"),
        (np.ones((2, 5)) / 5, r"\(batch, 4\)"),
        (np.ones((1, 1, 4)) / 4, "shape"),
        (np.array([0.5, np.nan, 0.25, 0.25]), "NaN"),
        (np.array([2.0, -1.0, 0.5, -0.5]), "softmax"),
    ],
)
def test_bad_class_probabilities_are_refused(small_tree, bad, message):
    with pytest.raises(ValueError, match=message):
        node_probabilities(small_tree, CLASSES, bad)


def test_overlapping_classes_are_refused(small_tree):
    with pytest.raises(ValueError, match="overlap"):
        tree_sum_matrix(small_tree, [T("b", 3), T("b2", 3)])
