"""Triage: the one rule that turns a node's probability into an answer, and the answers themselves.

A model carries an operating point per modality (dermoscopic, clinical) and one for photos of unknown modality,
each chosen on validation data for a target sensitivity (:func:`dermlens.evaluate.operating_point.choose_operating_points`).
Every caller that calls a photo suspicious (predictor, screening, the study's operating points, the metrics) uses
:func:`refers`, so "at or above the threshold" is written once.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class Triage(StrEnum):
    """What a photo's answer tells its user. A ``StrEnum``: it is its own string in CSV, JSON and comparisons
    (``Triage.REFER == "refer"``), so files and the web page keep their words.

    A new answer is a new member here plus the rule that gives it (:meth:`OperatingPoint.triage` for a diagnosis,
    the gate's verdict table for a stopped photo); ``stopped`` says which kind it is."""

    REFER = "refer"
    REASSURE = "reassure"
    RETAKE = "retake"  # the photo gate stopped the photo: another photo would help
    CANNOT_ASSESS = "cannot_assess"  # the photo gate stopped it: another photo would not help, see a doctor

    @property
    def stopped(self) -> bool:
        """True when the gate stopped the photo, so the answer is not a diagnosis."""
        return self in (Triage.RETAKE, Triage.CANNOT_ASSESS)


REFER, REASSURE = Triage.REFER, Triage.REASSURE


def refers(probability, threshold: float):
    """True where ``probability >= threshold``: a photo exactly at the threshold is referred (the safe side)."""
    return np.asarray(probability) >= threshold if np.ndim(probability) else bool(probability >= threshold)


@dataclass
class OperatingPoint:
    """Refer when P(node) >= threshold. Chosen on validation data for a target sensitivity, never on test data.

    A second rule per modality (another node and threshold, another answer) is a field here and a branch in
    :meth:`triage`: every consumer reads the answer from there."""

    node: str = "malignant"
    threshold: float = 0.5
    target_sensitivity: float | None = None
    sensitivity: float | None = None  # measured on the data it was chosen on
    specificity: float | None = None
    chosen_on: str = "default (not tuned)"

    def refers(self, node_probability):
        return refers(node_probability, self.threshold)

    def triage(self, node_probabilities) -> Triage:
        """``refer`` or ``reassure`` for one photo: its P(node), or all its node probabilities (a mapping)."""
        p = node_probabilities[self.node] if hasattr(node_probabilities, "keys") else node_probabilities
        return Triage.REFER if self.refers(p) else Triage.REASSURE

    def describe(self) -> str:
        return f"refer when P({self.node}) >= {self.threshold:.4f}"
