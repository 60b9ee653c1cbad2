"""The bundled segmenter's documented figures: docs/segmentation.md quotes the record, the record meets its targets,
and the check catches a figure that leaves its interval or misses its target."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from dermlens.segment.figures import TARGETS, check_figures, documented_figures, figures_table

DOCS = Path(__file__).resolve().parents[2] / "docs" / "segmentation.md"


@pytest.fixture(scope="module")
def record():
    return documented_figures()


def test_the_docs_table_is_rendered_from_the_record(record):
    assert "ph2" in record
    assert figures_table(record) in DOCS.read_text(encoding="utf-8")


def test_the_record_meets_its_targets_and_a_re_run_with_its_numbers_passes(record):
    assert check_figures(copy.deepcopy(record), record) == []
    assert all(record[name]["thresholded_jaccard"] >= target for name, target in TARGETS.items() if name in record)


def test_a_figure_outside_its_recorded_interval_is_reported(record):
    measured = {"ph2": copy.deepcopy(record["ph2"])}
    measured["ph2"]["mean_jaccard"] = record["ph2"]["mean_jaccard_ci95"][1] + 0.005
    problems = check_figures(measured, record)
    assert len(problems) == 1 and problems[0].startswith("ph2: mean_jaccard")


def test_a_missed_target_and_an_unrecorded_set_are_reported(record):
    wide = {"ph2": {**record["ph2"], "thresholded_jaccard_ci95": [0.0, 1.0]}}
    measured = {"ph2": {**record["ph2"], "thresholded_jaccard": TARGETS["ph2"] - 0.01}, "elsewhere": record["ph2"]}
    problems = check_figures(measured, wide)
    assert any("misses its target" in line for line in problems)
    assert "elsewhere: no documented figures to compare with" in problems
