"""The shipped PET networks' documented figures: docs/pet.md quotes the record, the record keeps the paper's claim,
and the check catches a figure that leaves its interval or a lost claim."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from dermlens.pet.figures import (
    MIN_FRACTION_FUZZY_DICE,
    check_figures,
    claim_problems,
    documented_figures,
    figures_table,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "pet.md"


@pytest.fixture(scope="module")
def record():
    return documented_figures()


def _method(dice, dice_ci, area, area_ci, small_dice, small_area):
    return {"fuzzy_dice": dice, "fuzzy_dice_ci95": dice_ci, "area_error": area, "area_error_ci95": area_ci,
            "area_bias": 0.0,
            "smallest": {"below_fwhm": 1.5, "n": 106, "fuzzy_dice": small_dice,
                         "fuzzy_dice_ci95": [small_dice - 0.04, small_dice + 0.04],
                         "area_error": small_area, "area_error_ci95": [small_area * 0.8, small_area * 1.2]}}


def _difference(mean, low, high):
    return {"mean": mean, "ci95": [low, high]}


@pytest.fixture()
def claim_kept():
    """Figures of networks that keep the claim (the 30-epoch study's, docs/pet.md), to exercise the check."""
    return {"test_set": {"n_images": 500, "seed": 1},
            "methods": {"fraction": _method(0.584, [0.563, 0.604], 0.458, [0.426, 0.491], 0.290, 0.86),
                        "threshold40": _method(0.520, [0.502, 0.537], 2.707, [2.445, 3.000], 0.201, 8.92),
                        "binary_unet": _method(0.514, [0.490, 0.538], 0.525, [0.494, 0.559], 0.187, 0.92)},
            "comparisons": {"fraction_minus_threshold40": {"fuzzy_dice": _difference(0.064, 0.053, 0.076),
                                                           "area_error": _difference(-2.25, -2.54, -2.00)},
                            "fraction_minus_binary_unet": {"fuzzy_dice": _difference(0.070, 0.060, 0.079),
                                                           "area_error": _difference(-0.067, -0.088, -0.047)}}}


def test_the_docs_table_is_rendered_from_the_record(record):
    assert figures_table(record) in DOCS.read_text(encoding="utf-8")


def test_the_record_is_the_fresh_test_set_of_pet_evaluate(record):
    assert record["test_set"] == {"n_images": 500, "seed": 1}


def test_the_record_keeps_the_papers_claim(record):
    assert claim_problems(record) == []


def test_a_re_evaluation_with_the_recorded_numbers_departs_only_from_the_claim(record):
    assert check_figures(copy.deepcopy(record), record) == claim_problems(record)


def test_figures_that_keep_the_claim_pass(claim_kept):
    assert check_figures(copy.deepcopy(claim_kept), claim_kept) == []


def test_a_figure_outside_its_documented_interval_is_reported(claim_kept):
    measured = copy.deepcopy(claim_kept)
    low, _ = claim_kept["methods"]["binary_unet"]["area_error_ci95"]
    measured["methods"]["binary_unet"]["area_error"] = low - 0.01
    problems = check_figures(measured, claim_kept)
    assert len(problems) == 1 and "binary_unet area_error (overall)" in problems[0]


def test_another_test_set_is_reported(claim_kept):
    measured = copy.deepcopy(claim_kept)
    measured["test_set"]["n_images"] = 50
    assert len(check_figures(measured, claim_kept)) == 1


def test_a_lost_claim_is_reported_even_inside_wide_intervals(claim_kept):
    measured, wide = copy.deepcopy(claim_kept), copy.deepcopy(claim_kept)
    for method in wide["methods"].values():
        method["smallest"]["fuzzy_dice_ci95"] = [0.0, 1.0]
    # The fraction network no better than the threshold on the smallest tumours: the claim's bin test fails.
    measured["methods"]["fraction"]["smallest"]["fuzzy_dice"] = 0.201
    assert check_figures(measured, wide) == ["smallest tumours: fraction fuzzy Dice 0.201 is not above threshold40's "
                                             "0.201"]


def test_the_claim_needs_the_fraction_network_above_the_thresholds_interval(claim_kept):
    weak = copy.deepcopy(claim_kept)
    weak["methods"]["fraction"]["fuzzy_dice"] = weak["methods"]["threshold40"]["fuzzy_dice_ci95"][1]
    problems = claim_problems(weak)
    assert any("upper 95% bound" in line for line in problems)
    weak["methods"]["fraction"]["fuzzy_dice"] = MIN_FRACTION_FUZZY_DICE - 0.001
    assert any(f"< {MIN_FRACTION_FUZZY_DICE}" in line for line in claim_problems(weak))
