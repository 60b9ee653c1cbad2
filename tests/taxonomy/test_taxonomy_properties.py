"""Properties of partitioning and inference over random trees, counts and class-size bounds."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dermlens.taxonomy import ClassAssignment, Taxonomy, node_probabilities, partition


@st.composite
def trees_with_counts(draw):
    size = draw(st.integers(1, 18))
    parents = [None] + [draw(st.integers(0, i - 1)) for i in range(1, size)]
    nodes = {i: {"id": f"n{i}", "name": f"Node {i}", "children": []} for i in range(size)}
    for i, parent in enumerate(parents):
        if parent is not None:
            nodes[parent]["children"].append(nodes[i])
    taxonomy = Taxonomy.from_dict({"version": "random", "tree": nodes[0]})
    counts = draw(st.dictionaries(st.sampled_from(list(taxonomy)), st.integers(0, 40), max_size=size))
    bound = draw(st.one_of(st.integers(1, 120), st.floats(1, 120, allow_nan=False), st.just(math.inf)))
    return taxonomy, counts, bound


def covers(taxonomy, cls, node_id):
    """Independent statement of which label nodes a class takes its images from."""
    if cls.own_only:
        return node_id == cls.node
    return cls.node == node_id or cls.node in taxonomy.ancestors(node_id)


@settings(max_examples=150, deadline=None)
@given(trees_with_counts())
def test_partition_properties(case):
    taxonomy, counts, bound = case
    classes = partition(taxonomy, counts, bound)
    total = sum(counts.values())

    assert sum(c.count for c in classes) == total
    assert all(c.count > 0 for c in classes)
    order = list(taxonomy)
    assert [order.index(c.node) for c in classes] == sorted(order.index(c.node) for c in classes)

    assignment = ClassAssignment(taxonomy, classes)
    per_class = [0] * len(classes)
    for node_id, count in counts.items():
        if count == 0:
            continue
        owners = [i for i, c in enumerate(classes) if covers(taxonomy, c, node_id)]
        assert owners == [assignment.class_index(node_id)]
        per_class[owners[0]] += count
    assert per_class == [c.count for c in classes]

    for cls in classes:
        if not cls.own_only:
            # classes are under the bound unless they could not be split
            assert cls.count < bound or taxonomy.is_leaf(cls.node)
            # and as coarse as allowed: the parent had to be split
            parent = taxonomy.parent(cls.node)
            if parent is not None:
                parent_total = sum(counts.get(n, 0) for n in taxonomy.descendants(parent))
                assert parent_total >= bound
        else:
            # kept apart only because its node was too big to stay whole
            assert not taxonomy.is_leaf(cls.node) and cls.count == counts[cls.node]
            assert sum(counts.get(n, 0) for n in taxonomy.descendants(cls.node)) >= bound

    if bound == math.inf and total:
        assert [(c.node, c.own_only) for c in classes] == [(taxonomy.root, False)]
    if bound == 1:
        assert {c.node for c in classes} == {n for n, k in counts.items() if k}


@settings(max_examples=150, deadline=None)
@given(trees_with_counts(), st.integers(0, 2**32 - 1), st.integers(1, 3))
def test_node_probabilities_sum_up_the_tree(case, seed, batch):
    taxonomy, counts, bound = case
    classes = partition(taxonomy, counts, bound)
    if not classes:
        return
    logits = np.random.default_rng(seed).normal(scale=3.0, size=(batch, len(classes)))
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)

    result = node_probabilities(taxonomy, classes, probs)
    # mass of the class sitting exactly at each node: an own_only class at a split node, or an unsplit class,
    # whose children then get nothing because no class lies at or below them
    mass_here = {n: np.zeros(batch) for n in taxonomy}
    for j, cls in enumerate(classes):
        mass_here[cls.node] += probs[:, j]

    np.testing.assert_allclose(result[taxonomy.root], 1.0, atol=1e-9)
    for node_id in taxonomy:
        children = taxonomy.children(node_id)
        expected = sum((result[c] for c in children), np.zeros(batch)) + mass_here[node_id]
        np.testing.assert_allclose(result[node_id], expected, atol=1e-9)
        has_class_below = any(c.node in taxonomy.descendants(node_id) for c in classes)
        if not has_class_below:
            np.testing.assert_array_equal(result[node_id], 0.0)
    # the first level sums to 1 once mass kept at the root itself is counted
    first_level = sum(result[c] for c in taxonomy.children(taxonomy.root)) + mass_here[taxonomy.root]
    if taxonomy.children(taxonomy.root):
        np.testing.assert_allclose(first_level, 1.0, atol=1e-9)
