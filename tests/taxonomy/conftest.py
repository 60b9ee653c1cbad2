"""Shared small trees for the taxonomy tests; built with Taxonomy.from_dict so each test can see the whole tree."""

import pytest

from dermlens.taxonomy import LabelMapper, Taxonomy, default_taxonomy


def node(node_id, *children, synonyms=()):
    """A node dict as it appears in tree.yaml."""
    return {"id": node_id, "name": node_id.replace("_", " ").title(), "synonyms": list(synonyms),
            "children": list(children)}


@pytest.fixture
def make_node():
    return node


@pytest.fixture
def small_tree() -> Taxonomy:
    """root > a > (a1, a2); root > b > (b1 > (b1x, b1y), b2); root > c."""
    return Taxonomy.from_dict({
        "version": "test-1",
        "tree": node(
            "root",
            node("a", node("a1"), node("a2")),
            node("b", node("b1", node("b1x"), node("b1y")), node("b2")),
            node("c"),
        ),
    })


@pytest.fixture(scope="module")
def taxonomy():
    """The packaged tree."""
    return default_taxonomy()


@pytest.fixture(scope="module")
def mapper(taxonomy):
    return LabelMapper(taxonomy)
