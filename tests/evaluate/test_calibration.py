"""Calibration: ECE by hand, reliability bins, and temperature scaling repairing a miscalibrated model."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from dermlens.evaluate.calibration import (
    apply_temperature,
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
)


def test_ece_hand_computed():
    # bin (.9, 1]: confidence .95, accuracy .5 -> |.45| x 2/4; bin (.6, .7]: .65 vs 1.0 -> |.35| x 2/4. ECE = .4
    assert expected_calibration_error([0.95, 0.95, 0.65, 0.65], [1, 0, 1, 1], n_bins=10) == pytest.approx(0.4)


def test_perfectly_calibrated_bins_have_zero_ece():
    conf = [0.75] * 4 + [0.25] * 4
    hit = [1, 1, 1, 0] + [1, 0, 0, 0]
    assert expected_calibration_error(conf, hit, n_bins=4) == pytest.approx(0.0)


def test_reliability_bins_edges():
    bins = reliability_bins([0.0, 1.0, 0.5], [0, 1, 1], n_bins=4)
    assert bins["count"] == [1, 1, 0, 1]  # 0.0 in the first bin, 0.5 in (.25, .5], 1.0 in the last
    assert bins["accuracy"][3] == 1.0 and bins["confidence"][0] == 0.0
    assert bins["accuracy"][2] is None


def _miscalibrated(scale: float, n: int = 4000, classes: int = 5, seed: int = 0):
    """Labels drawn from softmax(z) (so z is calibrated), logits reported as scale * z."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, classes))
    y = np.array([rng.choice(classes, p=p) for p in softmax(z, axis=1)])
    return scale * z, y


@pytest.mark.parametrize("scale", [3.0, 0.4])
def test_temperature_scaling_recovers_the_scale_and_lowers_nll_on_held_out_data(scale):
    logits, y = _miscalibrated(scale)
    val, test = slice(0, 2000), slice(2000, None)
    t = fit_temperature(logits[val], y[val])
    assert t == pytest.approx(scale, rel=0.15)
    assert negative_log_likelihood(logits[test], y[test], t) < negative_log_likelihood(logits[test], y[test]) - 0.02
    before = calibration_summary(apply_temperature(logits[test], 1.0), y[test])
    after = calibration_summary(apply_temperature(logits[test], t), y[test])
    assert after["ece"] < before["ece"] / 2
    assert after["nll"] < before["nll"]
    # Temperature never changes the predicted class.
    assert (apply_temperature(logits[test], t).argmax(1) == logits[test].argmax(1)).all()


def test_log_probabilities_with_zeros_are_accepted_as_logits():
    with np.errstate(divide="ignore"):
        log_probs = np.log(np.array([[0.7, 0.3, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0]]))
    t = fit_temperature(log_probs, [0, 1, 1])
    probs = apply_temperature(log_probs, t)
    assert np.isfinite(t) and np.allclose(probs.sum(1), 1) and (probs[:, 2] < 1e-6).all()


def test_separable_validation_leaves_the_temperature_alone():
    # All correct: NLL falls without limit as T -> 0, so no temperature is fitted.
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    assert fit_temperature(logits, [0, 1, 0]) == 1.0
    assert fit_temperature(logits, [0, 1, 1]) != 1.0  # one mistake: a finite optimum exists
