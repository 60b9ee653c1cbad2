"""The 3-way triage rule: refer first (its threshold alone sets the sensitivity), then non_neoplastic, then reassure."""
from __future__ import annotations

import json

import pytest

from dermlens.taxonomy.triage import NON_NEOPLASTIC, REASSURE, REFER, OperatingPoint


@pytest.fixture
def point() -> OperatingPoint:
    return OperatingPoint(threshold=0.2, non_neoplastic_threshold=0.6)


@pytest.mark.parametrize("p_malignant, p_non_neoplastic, expected", [
    (0.25, 0.10, REFER),
    (0.20, 0.10, REFER),            # at the referral threshold: the safe side
    (0.25, 0.90, REFER),            # a confident rash is still referred when P(malignant) is high: no sensitivity lost
    (0.19, 0.60, NON_NEOPLASTIC),   # at the second threshold
    (0.05, 0.90, NON_NEOPLASTIC),
    (0.05, 0.59, REASSURE),
    (0.19, 0.10, REASSURE),
])
def test_three_way_answer_on_both_sides_of_each_threshold(point, p_malignant, p_non_neoplastic, expected):
    assert point.triage(p_malignant, p_non_neoplastic) == expected


def test_a_point_without_the_second_threshold_answers_refer_or_reassure():
    older = OperatingPoint(threshold=0.2)
    assert older.triage(0.05, 0.99) == REASSURE
    assert older.triage(0.3, 0.99) == REFER
    assert older.triage(0.05) == REASSURE  # callers that pass P(malignant) only


def test_describe_names_both_thresholds(point):
    assert "P(malignant) >= 0.2000" in point.describe()
    assert "non_neoplastic when P(non_neoplastic) >= 0.6000" in point.describe()
    assert "non_neoplastic" not in OperatingPoint(threshold=0.2).describe()


def test_the_second_threshold_survives_json(point):
    again = OperatingPoint(**json.loads(json.dumps(point.__dict__)))
    assert again == point and again.triage(0.1, 0.7) == NON_NEOPLASTIC
