"""Operating points: one chooser for the pooled and per-modality points, on known scores."""
from __future__ import annotations

import numpy as np
import pytest

from dermlens.evaluate.operating_point import POOLED, choose_operating_point, choose_operating_points
from dermlens.models import ModelConfig, OperatingPoint
from dermlens.taxonomy import ClassAssignment, TrainingClass, default_taxonomy

CLASSES = [TrainingClass("melanoma", 1), TrainingClass("melanocytic_nevus", 1)]


def test_choose_operating_point_on_known_scores():
    tax = default_taxonomy()
    assignment = ClassAssignment(tax, CLASSES)
    p_mel = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.2, 0.1, 0.05])
    probs = np.stack([p_mel, 1 - p_mel], axis=1)
    labels = ["melanoma"] * 4 + ["melanocytic_nevus"] * 4
    op = choose_operating_point(tax, assignment, probs, labels, target=0.75)
    # 3 of 4 melanomas score >= 0.6; the next lower score is 0.3: the threshold sits half-way, clear of both.
    assert op.threshold == pytest.approx(0.45)
    assert op.sensitivity == pytest.approx(0.75) and op.specificity == pytest.approx(0.75)  # 0.7 is a false alarm
    every_melanoma = choose_operating_point(tax, assignment, probs, labels, target=1.0)
    assert every_melanoma.threshold == pytest.approx(0.25)  # between the last melanoma (0.3) and the next score
    assert every_melanoma.sensitivity == 1.0 and every_melanoma.specificity == pytest.approx(0.75)
    p_low = np.array([0.9, 0.4, 0.7, 0.5])  # the lowest score of all is a melanoma's: half-way down to 0
    low = choose_operating_point(tax, assignment, np.stack([p_low, 1 - p_low], 1), labels[2:6], target=1.0)
    assert low.threshold == pytest.approx(0.2) and low.sensitivity == 1.0 and low.specificity == 0.0
    only_benign = choose_operating_point(tax, assignment, probs[4:], labels[4:], target=0.75)
    assert only_benign.threshold == 0.5 and "default" in only_benign.chosen_on



def test_each_modality_gets_its_own_point_from_its_own_photos_and_the_rest_is_said():
    tax = default_taxonomy()
    # dermoscopic photos: melanomas score high; clinical ones: every score is low
    p_mel = np.array([0.9, 0.8, 0.2, 0.1, 0.30, 0.25, 0.05, 0.02])
    labels = ["melanoma", "melanoma", "melanocytic_nevus", "melanocytic_nevus"] * 2
    modalities = ["dermoscopic"] * 4 + ["clinical"] * 4
    points = choose_operating_points(tax, CLASSES, np.stack([p_mel, 1 - p_mel], 1), labels, modalities, 1.0,
                                     chosen_with="torch fp32")
    assert set(points.tuned) == {POOLED, "dermoscopic", "clinical"} and not points.untuned
    assert points.per_modality["dermoscopic"].threshold == pytest.approx(0.5)  # half-way from 0.8 down to 0.2
    assert points.per_modality["clinical"].threshold == pytest.approx(0.15)  # half-way from 0.25 down to 0.05
    assert points.pooled.threshold == pytest.approx(0.225)  # the lowest melanoma (0.25) and 0.2 below it
    assert points.per_modality["clinical"].chosen_on == "validation (4 images, 2 malignant, torch fp32)"

    only_clinical = choose_operating_points(tax, CLASSES, np.stack([p_mel, 1 - p_mel], 1)[4:], labels[4:],
                                            modalities[4:], 1.0)
    assert set(only_clinical.tuned) == {POOLED, "clinical"}
    assert only_clinical.untuned == {"dermoscopic": "no dermoscopic photos in the data"}


def test_applying_points_replaces_only_those_the_data_chose():
    tax = default_taxonomy()
    config = ModelConfig("x", None, CLASSES, "v", "f", OperatingPoint(threshold=0.3),
                         {"dermoscopic": OperatingPoint(threshold=0.2), "clinical": OperatingPoint(threshold=0.1)})
    p_mel = np.array([0.30, 0.25, 0.05, 0.02])
    chosen = choose_operating_points(tax, CLASSES, np.stack([p_mel, 1 - p_mel], 1),
                                     ["melanoma"] * 2 + ["melanocytic_nevus"] * 2, ["clinical"] * 4, 1.0)
    before = chosen.apply(config)
    assert before == {POOLED: OperatingPoint(threshold=0.3), "clinical": OperatingPoint(threshold=0.1)}
    assert config.operating_points["clinical"].threshold == pytest.approx(0.15)
    assert config.operating_point.threshold == pytest.approx(0.15)
    assert config.operating_points["dermoscopic"] == OperatingPoint(threshold=0.2)  # no dermoscopic photos: kept
    lacking = choose_operating_points(tax, CLASSES, np.stack([p_mel, 1 - p_mel], 1)[2:],
                                      ["melanocytic_nevus"] * 2, ["clinical"] * 2, 1.0)
    assert lacking.tuned == {} and set(lacking.untuned) == {POOLED, "dermoscopic", "clinical"}
    lacking.apply(config)
    assert config.operating_point.threshold == pytest.approx(0.15)  # a point the data cannot choose is kept
