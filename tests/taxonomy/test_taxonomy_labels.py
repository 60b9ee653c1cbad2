import pickle

import pytest

from dermlens.taxonomy import LabelMapper, Taxonomy, UnknownLabelError, normalize_label


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Malignant_Melanoma", "malignant_melanoma"),
        ("  malignant melanoma ", "malignant_melanoma"),
        ("Malignant--Melanoma", "malignant_melanoma"),
        ("malignant _ - melanoma", "malignant_melanoma"),
        ("Café-au-lait macule", "cafe_au_lait_macule"),
        ("Bowen's disease", "bowens_disease"),
        ("Bowen\u2019s disease", "bowens_disease"),
        ("lentigo NOS", "lentigo_nos"),
        ("__", ""),
    ],
)
def test_normalize_label(raw, expected):
    assert normalize_label(raw) == expected


@pytest.fixture
def tree(make_node):
    return Taxonomy.from_dict({
        "version": "1",
        "tree": make_node(
            "root",
            make_node("melanoma", make_node("nodular_melanoma"), synonyms=["mel", "Malignant Melanoma"]),
            make_node("nevus", synonyms=["nv"]),
        ),
    })


def test_maps_ids_names_and_synonyms(tree):
    mapper = LabelMapper(tree)
    assert mapper.map("melanoma") == "melanoma"
    assert mapper.map("MEL") == "melanoma"
    assert mapper.map("Malignant_Melanoma") == "melanoma"
    assert mapper.map("Nodular Melanoma") == "nodular_melanoma"  # display name
    assert mapper.map("nv") == "nevus"


def test_unknown_label_error_names_label_file_and_suggestions(tree):
    mapper = LabelMapper(tree)
    with pytest.raises(UnknownLabelError) as info:
        mapper.map("melanom", file="data/labels.csv")
    error = info.value
    assert isinstance(error, ValueError)
    assert error.label == "melanom" and error.file == "data/labels.csv"
    assert error.suggestions[0] == "melanoma"
    assert len(error.suggestions) <= 5
    assert "'melanom'" in str(error) and "data/labels.csv" in str(error) and "'melanoma'" in str(error)
    # one suggestion per node, so a node's several spellings do not crowd the list
    assert len({mapper.map(s) for s in error.suggestions}) == len(error.suggestions)

    copy = pickle.loads(pickle.dumps(error))
    assert (copy.label, copy.file, copy.suggestions) == (error.label, error.file, error.suggestions)


def test_unknown_label_without_file_or_close_match(tree):
    mapper = LabelMapper(tree)
    with pytest.raises(UnknownLabelError) as info:
        mapper.map("psoriasis")
    assert info.value.file is None and info.value.suggestions == []
    assert " in " not in str(info.value).split(";")[0]
    for empty in ("", "  ", None):
        with pytest.raises(UnknownLabelError):
            mapper.map(empty)


def test_extra_mapping_adds_and_overrides(tree):
    mapper = LabelMapper(tree, extra={"Naevus pigmentosus": "nevus", "mel": "nodular_melanoma"})
    assert mapper.map("naevus-pigmentosus") == "nevus"
    assert mapper.map("mel") == "nodular_melanoma"  # the caller's meaning of their own code wins
    assert mapper.map("melanoma") == "melanoma"
    assert "Naevus pigmentosus" in mapper.known_names()
    with pytest.raises(ValueError, match="'nowhere'"):
        LabelMapper(tree, extra={"x": "nowhere"})


def test_known_names_cover_every_node(tree):
    names = LabelMapper(tree).known_names()
    assert {"root", "melanoma", "nodular_melanoma", "nevus", "mel", "nv"} <= set(names)
    # one entry per normalised form: "Malignant Melanoma" once, not also as "malignant_melanoma"
    assert len({normalize_label(n) for n in names}) == len(names)
