"""Triage: the one rule that turns a photo's node probabilities into an answer, and the answers themselves.

Esteva et al.'s first question is 3-way: malignant, benign, or non-neoplastic. The rule answers it in that order of
urgency: ``refer`` when P(malignant) reaches the referral threshold (chosen for a target sensitivity, so this decision
alone sets how many cancers are referred); otherwise ``non_neoplastic`` ("most likely a skin disease that is not a
tumour: see a doctor if it persists, spreads or worsens") when P(non-neoplastic) reaches its own threshold; otherwise
``reassure``. The second threshold never takes a photo away from ``refer``, so it cannot cost sensitivity.

A model carries an operating point per modality (dermoscopic, clinical) and one for photos of unknown modality,
each chosen on validation data (:func:`dermlens.evaluate.operating_point.choose_operating_points`). A modality whose
validation data held too few non-neoplastic photos (dermoscopy) has no second threshold and answers refer/reassure,
as older model configs do. Every caller that calls a photo suspicious (predictor, screening, the study's operating
points, the metrics) uses :func:`refers`, so "at or above the threshold" is written once.
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
    NON_NEOPLASTIC = "non_neoplastic"  # most likely a skin disease that is not a tumour: see a doctor if it persists
    REASSURE = "reassure"
    RETAKE = "retake"  # the photo gate stopped the photo: another photo would help
    CANNOT_ASSESS = "cannot_assess"  # the photo gate stopped it: another photo would not help, see a doctor

    @property
    def stopped(self) -> bool:
        """True when the gate stopped the photo, so the answer is not a diagnosis."""
        return self in (Triage.RETAKE, Triage.CANNOT_ASSESS)


REFER, NON_NEOPLASTIC, REASSURE = Triage.REFER, Triage.NON_NEOPLASTIC, Triage.REASSURE


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
    # The 3-way answer for photos that are not referred; None: this modality answers refer/reassure only.
    non_neoplastic_threshold: float | None = None
    non_neoplastic_recall: float | None = None  # non-neoplastic validation photos (not referred) given the answer
    benign_called_non_neoplastic: float | None = None  # benign validation photos (not referred) given it

    def refers(self, node_probability):
        return refers(node_probability, self.threshold)

    def triage(self, node_probabilities, non_neoplastic_probability: float | None = None) -> Triage:
        """``refer``, ``non_neoplastic`` or ``reassure`` for one photo: all its node probabilities (a mapping), or its
        P(node) and, optionally, its P(non-neoplastic)."""
        if hasattr(node_probabilities, "keys"):
            p, non_neoplastic_probability = node_probabilities[self.node], node_probabilities.get("non_neoplastic")
        else:
            p = node_probabilities
        if self.refers(p):
            return Triage.REFER
        if self.non_neoplastic_threshold is not None and non_neoplastic_probability is not None \
                and refers(non_neoplastic_probability, self.non_neoplastic_threshold):
            return Triage.NON_NEOPLASTIC
        return Triage.REASSURE

    def describe(self) -> str:
        rule = f"refer when P({self.node}) >= {self.threshold:.4f}"
        if self.non_neoplastic_threshold is not None:
            rule += f"; else non_neoplastic when P(non_neoplastic) >= {self.non_neoplastic_threshold:.4f}"
        return rule
