import math

import pytest

from dermlens.taxonomy import ClassAssignment, TrainingClass, partition

T = TrainingClass

# small_tree (conftest): root > a > (a1, a2); root > b > (b1 > (b1x, b1y), b2); root > c
COUNTS = {"a1": 3, "a2": 2, "b1x": 5, "b1y": 1, "b2": 0, "c": 0}


def test_subtrees_under_the_bound_become_classes_and_empty_ones_vanish(small_tree):
    assert partition(small_tree, COUNTS, 7) == [T("a", 5), T("b", 6)]


def test_bound_is_exclusive(small_tree):
    # b holds exactly 6 images: not fewer than 6, so it is split; its empty child b2 yields nothing
    assert partition(small_tree, COUNTS, 6) == [T("a", 5), T("b1x", 5), T("b1y", 1)]


def test_leaf_above_the_bound_stays_one_class(small_tree):
    assert partition(small_tree, {"c": 100, "a1": 1}, 10) == [T("a", 1), T("c", 100)]


def test_infinite_bound_gives_one_class(small_tree):
    assert partition(small_tree, COUNTS, math.inf) == [T("root", 11)]


def test_bound_one_gives_one_class_per_labelled_node(small_tree):
    classes = partition(small_tree, {**COUNTS, "b": 4}, 1)
    assert classes == [T("a1", 3), T("a2", 2), T("b", 4, own_only=True), T("b1x", 5), T("b1y", 1)]


def test_images_labelled_at_a_split_inner_node_keep_their_own_class(small_tree):
    classes = partition(small_tree, {"b": 4, "b1x": 3, "b2": 3}, 5)
    assert classes == [T("b", 4, own_only=True), T("b1", 3), T("b2", 3)]
    assignment = ClassAssignment(small_tree, classes)
    assert assignment.class_index("b") == 0
    assert assignment.class_index("b1x") == 1
    assert assignment.class_index("b1y") == 1  # no images, but b1's class covers it
    assert assignment.class_index("b2") == 2
    with pytest.raises(ValueError, match="'a1' is not covered"):
        assignment.class_index("a1")
    with pytest.raises(ValueError, match="'root' is not covered"):
        assignment.class_index("root")  # the own_only class at b must not absorb its ancestors either
    with pytest.raises(KeyError, match="zzz"):
        assignment.class_index("zzz")


def test_inner_node_labels_join_an_unsplit_subtree(small_tree):
    classes = partition(small_tree, {"b": 4, "b1x": 1}, 10)
    assert classes == [T("root", 5)]
    classes = partition(small_tree, {"b": 4, "b1x": 1}, 5)
    assert classes == [T("b", 4, own_only=True), T("b1", 1)]


def test_output_order_is_pre_order_whatever_the_count_order(small_tree):
    forward = partition(small_tree, COUNTS, 1)
    backward = partition(small_tree, dict(reversed(list(COUNTS.items()))), 1)
    assert forward == backward == [T("a1", 3), T("a2", 2), T("b1x", 5), T("b1y", 1)]


def test_no_images_no_classes(small_tree):
    assert partition(small_tree, {}, 5) == []
    assert partition(small_tree, {"a1": 0}, 5) == []


def test_unknown_count_keys_are_named(small_tree):
    with pytest.raises(KeyError, match=r"\['melanoma', 'zebra'\]"):
        partition(small_tree, {"a1": 1, "zebra": 2, "melanoma": 3}, 5)


@pytest.mark.parametrize("bad", [0, 0.5, -3, math.nan, "10", None, True])
def test_max_class_size_must_be_at_least_one(small_tree, bad):
    with pytest.raises(ValueError, match="max_class_size"):
        partition(small_tree, COUNTS, bad)


@pytest.mark.parametrize("bad", [-1, 2.5, "3", None])
def test_counts_must_be_non_negative_integers(small_tree, bad):
    with pytest.raises(ValueError, match="'a1'"):
        partition(small_tree, {"a1": bad}, 5)


def test_class_assignment_rejects_overlapping_or_unknown_classes(small_tree):
    with pytest.raises(ValueError, match="overlap"):
        ClassAssignment(small_tree, [T("b", 5), T("b1x", 2)])
    with pytest.raises(ValueError, match="overlap"):
        ClassAssignment(small_tree, [T("b1", 5), T("b1", 2, own_only=True)])
    with pytest.raises(KeyError, match="zzz"):
        ClassAssignment(small_tree, [T("zzz", 1)])
    # an own_only class at b and a class below b do not overlap
    assert len(ClassAssignment(small_tree, [T("b", 5, own_only=True), T("b1", 2)])) == 2


def test_training_class_round_trips_through_dict():
    cls = T("b", 4, own_only=True)
    assert T.from_dict(cls.to_dict()) == cls
    assert T.from_dict({"node": "a", "count": 3}) == T("a", 3, False)
