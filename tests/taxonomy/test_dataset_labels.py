"""Every diagnosis label of every dataset in the shared data folder maps onto a taxonomy node, and sits where expected."""

import csv
import os
from collections import Counter
from pathlib import Path

import pytest

from dermlens.taxonomy import UnknownLabelError, UnknownLabelsError, normalize_label

DATA = Path(os.environ.get("DERMLENS_SHARED_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")
LABEL_COLUMNS = ("diagnosis", "diagnosis_fine")
LABEL_FILES = sorted(DATA.rglob("labels.csv")) if DATA.is_dir() else []
needs_data = pytest.mark.skipif(not LABEL_FILES, reason=f"no labels.csv found under {DATA} (set DERMLENS_SHARED_DATA)")

DERMNET_MALIGNANT = ["Basal cell carcinoma", "Melanoma", "Squamous cell carcinoma", "Melanoma in situ",
                     "Nodular melanoma", "Amelanotic melanoma", "Metastatic melanoma", "Actinic keratosis",
                     "Merkel cell carcinoma", "Kaposi sarcoma", "Mycosis fungoides"]
DERMNET_NON_NEOPLASTIC = ["Psoriasis", "Acne vulgaris", "Vitiligo", "Atopic dermatitis", "Tinea corporis",
                          "Bullous pemphigoid", "Leg ulcer", "Pruritus", "Exanthems", "Oral mucositis - Stomatitis",
                          "Alopecia areata", "Melasma", "Ichthyosis"]


def read_labels(path: Path) -> Counter:
    with open(path, newline="", encoding="utf-8") as handle:
        return Counter(row[c] for row in csv.DictReader(handle) for c in LABEL_COLUMNS if row.get(c))


@pytest.mark.data
@needs_data
@pytest.mark.parametrize("path", LABEL_FILES, ids=[p.parent.name for p in LABEL_FILES])
def test_every_dataset_label_maps(mapper, path):
    labels = read_labels(path)
    assert labels, f"{path} has no {' or '.join(LABEL_COLUMNS)} column"
    mapper.map_all(labels, file=str(path))  # raises one error listing every unknown label


def test_map_all_lists_every_unknown_label_with_suggestions(mapper):
    labels = ["melanoma", "melanom", "Basal cell carcinom", "psoriasis", "melanom", "zzzz qqqq"]
    with pytest.raises(UnknownLabelsError) as info:
        mapper.map_all(labels, file="some/labels.csv")
    error = info.value
    assert isinstance(error, ValueError)
    assert error.labels == ["melanom", "Basal cell carcinom", "zzzz qqqq"]  # each once, in first-seen order
    assert all(isinstance(e, UnknownLabelError) for e in error.errors)
    message = str(error)
    assert "3 unknown" in message and "some/labels.csv" in message
    assert "'melanom': closest known names: 'melanoma'" in message
    assert "'Basal cell carcinom': closest known names: " in message
    assert normalize_label(error.errors[1].suggestions[0]) == "basal_cell_carcinoma"
    assert repr(error.errors[1].suggestions[0]) in message
    assert "'zzzz qqqq': closest known names: no known name is close" in message
    assert mapper.map_all(["mel", "MEL", "bcc"]) == {"mel": "melanoma", "MEL": "melanoma", "bcc": "basal_cell_carcinoma"}


def test_map_all_error_survives_pickling(mapper):
    import pickle

    with pytest.raises(UnknownLabelsError) as info:
        mapper.map_all(["melanom"])
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value) and copy.labels == ["melanom"]


@pytest.mark.parametrize("label", DERMNET_MALIGNANT)
def test_dermnet_malignant_topics_map_under_malignant(taxonomy, mapper, label):
    assert taxonomy.ancestor_at_level(mapper.map(label), 1) == "malignant", label


@pytest.mark.parametrize("label", DERMNET_NON_NEOPLASTIC)
def test_dermnet_non_neoplastic_topics_map_under_non_neoplastic(taxonomy, mapper, label):
    assert taxonomy.ancestor_at_level(mapper.map(label), 1) == "non_neoplastic", label


def test_group_topics_sit_on_inner_nodes(taxonomy, mapper):
    for label in ["Leg ulcer", "Pruritus", "Exanthems", "Oral mucositis - Stomatitis", "Cutaneous vasculitis",
                  "Purpura", "Pyoderma", "Panniculitis", "Granulomatous dermatitis"]:
        assert taxonomy.children(mapper.map(label)), label


@pytest.mark.data
@needs_data
def test_topics_named_in_these_tests_exist_in_dermnet():
    path = DATA / "dermnet" / "labels.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    topics = set(read_labels(path))
    assert set(DERMNET_MALIGNANT + DERMNET_NON_NEOPLASTIC) <= topics
