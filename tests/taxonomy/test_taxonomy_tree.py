import dataclasses

import pytest

from dermlens.taxonomy import Taxonomy


def test_navigation(small_tree):
    t = small_tree
    assert t.root == "root"
    assert list(t) == ["root", "a", "a1", "a2", "b", "b1", "b1x", "b1y", "b2", "c"]
    assert len(t) == 10
    assert "b1x" in t and "zzz" not in t and 3 not in t
    assert t.children("b") == ("b1", "b2")
    assert t.parent("b1x") == "b1" and t.parent("root") is None
    assert t.ancestors("b1x") == ["b1", "b", "root"]
    assert t.ancestors("root") == []
    assert t.descendants("b") == ["b", "b1", "b1x", "b1y", "b2"]
    assert t.descendants("b", include_self=False) == ["b1", "b1x", "b1y", "b2"]
    assert t.descendants("c", include_self=False) == []
    assert t.is_leaf("c") and not t.is_leaf("b1")
    assert t.leaves() == ["a1", "a2", "b1x", "b1y", "b2", "c"]
    assert t.depth("b1x") == 3


def test_levels(small_tree):
    t = small_tree
    assert t.level_nodes(0) == ["root"]
    assert t.level_nodes(1) == ["a", "b", "c"]
    assert t.level_nodes(3) == ["b1x", "b1y"]
    assert t.level_nodes(4) == []
    assert t.ancestor_at_level("b1x", 1) == "b"
    assert t.ancestor_at_level("b1x", 2) == "b1"
    assert t.ancestor_at_level("b1x", 3) == "b1x"
    assert t.ancestor_at_level("c", 2) is None
    with pytest.raises(ValueError):
        t.level_nodes(-1)


def test_unknown_node_raises_keyerror_naming_it(small_tree):
    for call in (lambda: small_tree["nope"], lambda: small_tree.children("nope"),
                 lambda: small_tree.ancestors("nope"), lambda: small_tree.descendants("nope"),
                 lambda: small_tree.ancestor_at_level("nope", 1)):
        with pytest.raises(KeyError, match="nope"):
            call()


def test_nodes_are_immutable(small_tree):
    with pytest.raises(dataclasses.FrozenInstanceError):
        small_tree["a"].name = "changed"


@pytest.mark.parametrize(
    "tree, message",
    [
        ({"id": "root", "name": "R", "children": [{"id": "a", "name": "A"}, {"id": "a", "name": "A2"}]},
         "'a' is used twice"),
        ({"id": "root", "name": "R", "children": [{"id": "BadId", "name": "A"}]}, "snake_case"),
        ({"id": "root", "name": "R", "children": [{"id": "two__underscores", "name": "A"}]}, "snake_case"),
        ({"id": "root", "name": "R", "children": [{"name": "A"}]}, "snake_case"),
        ({"id": "root", "name": "R", "children": [{"id": "a"}]}, "root > a needs a non-empty 'name'"),
        ({"id": "root", "name": "R", "children": [{"id": "a", "name": "A", "synonym": ["x"]}]}, "unknown keys"),
        ({"id": "root", "name": "R", "children": [{"id": "a", "name": "A", "synonyms": "x"}]}, "synonyms"),
        ({"id": "root", "name": "R", "children": {"id": "a", "name": "A"}}, "'children' must be a list"),
        ({"id": "root", "name": "R", "children": [
            {"id": "a", "name": "A", "synonyms": ["Big Thing"]},
            {"id": "b", "name": "big-thing"}]}, "collides"),
        ({"id": "root", "name": "R", "children": [{"id": "a", "name": "A"}, {"id": "b", "name": "a"}]},
         "collides"),
    ],
)
def test_from_dict_rejects_bad_trees(tree, message):
    with pytest.raises(ValueError, match=message):
        Taxonomy.from_dict({"version": "1", "tree": tree})


def test_from_dict_rejects_bad_top_level():
    with pytest.raises(ValueError, match="version"):
        Taxonomy.from_dict({"version": "", "tree": {"id": "root", "name": "R"}})
    with pytest.raises(ValueError, match="no 'tree'"):
        Taxonomy.from_dict({"version": "1"})
    with pytest.raises(ValueError, match="unknown top-level"):
        Taxonomy.from_dict({"version": "1", "tree": {"id": "root", "name": "R"}, "nodes": []})


def test_same_label_twice_on_one_node_is_fine():
    t = Taxonomy.from_dict({"version": "1", "tree": {"id": "mel", "name": "Mel", "synonyms": ["MEL", "m-e-l"]}})
    assert len(t) == 1 and t.is_leaf("mel")


def test_fingerprint_tracks_structure_not_wording(make_node):
    def build(*children, root_synonyms=()):
        return Taxonomy.from_dict({"version": "x", "tree": make_node("root", *children, synonyms=root_synonyms)})

    base = build(make_node("a", make_node("a1")), make_node("b"))
    assert base.fingerprint() == build(make_node("a", make_node("a1")), make_node("b"),
                                       root_synonyms=["everything"]).fingerprint()
    assert base.fingerprint() != build(make_node("a"), make_node("b", make_node("a1"))).fingerprint()
    assert base.fingerprint() != build(make_node("b"), make_node("a", make_node("a1"))).fingerprint()
    assert base.fingerprint() != build(make_node("a", make_node("a1")), make_node("c")).fingerprint()
    assert len(base.fingerprint()) == 16


def test_render_shows_ids_names_and_counts(small_tree):
    plain = small_tree.render()
    lines = plain.splitlines()
    assert len(lines) == len(small_tree)
    assert lines[0].startswith("root")
    assert lines[6] == "      b1x  B1X"
    counted = small_tree.render({"b": 2, "b1x": 5, "a1": 1})
    assert "root  Root  [8]" in counted
    assert "  b  B  [7, 2 here]" in counted
    assert "      b1x  B1X  [5]" in counted
    with pytest.raises(KeyError, match="zzz"):
        small_tree.render({"zzz": 1})


def test_load_from_file_and_errors_name_the_file(tmp_path):
    good = tmp_path / "tree.yaml"
    good.write_text("version: '7'\ntree:\n  id: root\n  name: Root\n  children:\n  - id: leaf\n    name: Leaf\n")
    t = Taxonomy.load(good)
    assert t.version == "7" and list(t) == ["root", "leaf"]

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("version: [unclosed\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        Taxonomy.load(bad_yaml)

    bad_tree = tmp_path / "dup.yaml"
    bad_tree.write_text("tree:\n  id: root\n  name: R\n  children:\n  - {id: x, name: X}\n  - {id: x, name: Y}\n")
    with pytest.raises(ValueError, match=r"dup\.yaml.*'x' is used twice"):
        Taxonomy.load(bad_tree)
