"""Metrics, operating points and (later) the study."""
from dermlens.evaluate.operating_point import (
    sensitivity_specificity,
    threshold_for_sensitivity,
    threshold_for_specificity,
)

__all__ = ["sensitivity_specificity", "threshold_for_sensitivity", "threshold_for_specificity"]
