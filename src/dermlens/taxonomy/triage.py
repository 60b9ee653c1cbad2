"""Triage: the one rule that turns a node's probability into "refer" or "reassure".

A model carries an operating point per modality (dermoscopic, clinical) and one for photos of unknown modality,
each chosen on validation data for a target sensitivity (:func:`dermlens.evaluate.operating_point.choose_operating_point`).
Every caller that calls a photo suspicious (predictor, screening, the study's operating points, the metrics) uses
:func:`refers`, so "at or above the threshold" is written once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REFER = "refer"
REASSURE = "reassure"


def refers(probability, threshold: float):
    """True where ``probability >= threshold``: a photo exactly at the threshold is referred (the safe side)."""
    return np.asarray(probability) >= threshold if np.ndim(probability) else bool(probability >= threshold)


@dataclass
class OperatingPoint:
    """Refer when P(node) >= threshold. Chosen on validation data for a target sensitivity, never on test data."""

    node: str = "malignant"
    threshold: float = 0.5
    target_sensitivity: float | None = None
    sensitivity: float | None = None  # measured on the data it was chosen on
    specificity: float | None = None
    chosen_on: str = "default (not tuned)"

    def refers(self, node_probability):
        return refers(node_probability, self.threshold)

    def triage(self, node_probability: float) -> str:
        """``refer`` or ``reassure`` for one photo's P(node)."""
        return REFER if self.refers(node_probability) else REASSURE

    def describe(self) -> str:
        return f"refer when P({self.node}) >= {self.threshold:.4f}"
