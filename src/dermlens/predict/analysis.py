"""The one typed answer for one photo: what every consumer (batch files, the Python API, the web service,
screening, the int8 check, the study) reads, and none of them re-derives.

    Analysis
      class_probabilities  the network's softmax over the training classes (float64, sums to 1)
      probabilities        every taxonomy node: the sum of the training classes at or below it
      top5                 training-class nodes, most likely first
      embedding            the classifier's input (the gate, the modality recogniser, the lesion head read it)
      gate                 the gate's verdict as a value (dermlens.gate.GateVerdict), not_checked when off
      modality             given or recognised; its source
      operating_point      the one that was applied (that modality's, else the pooled one)
      referral             refer / reassure at that operating point: the model's call
      triage               what the user is told: the referral, or retake / cannot_assess when the gate stopped it
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dermlens.gate import GateVerdict
from dermlens.taxonomy import OperatingPoint, Triage


@dataclass
class Analysis:
    image: str
    probabilities: dict[str, float] = field(default_factory=dict)  # every taxonomy node
    top5: list[tuple[str, float]] = field(default_factory=list)  # training-class nodes, most likely first
    triage: Triage | None = None  # None when the image failed
    error: str = ""
    modality: str = ""  # "dermoscopic" or "clinical" (given or recognised); "" when the model knows one only
    modality_source: str = ""  # "given" or "recognised"
    gate: GateVerdict | None = None
    operating_point: OperatingPoint | None = None
    referral: Triage | None = None  # refer / reassure at the operating point, whatever the gate said
    class_probabilities: np.ndarray | None = field(default=None, repr=False)
    embedding: np.ndarray | None = field(default=None, repr=False)  # None when nobody needed it

    @property
    def stopped(self) -> bool:
        """The gate stopped the photo: ``triage`` is retake or cannot_assess, not a diagnosis."""
        return self.triage is not None and self.triage.stopped

    @property
    def node_probability(self) -> float | None:
        """P(node) of the operating point's node: the number the triage was decided on."""
        return None if self.operating_point is None else self.probabilities[self.operating_point.node]

    # The gate's verdict in the words of the batch files' columns.
    @property
    def quality(self) -> str:
        return self.gate.quality if self.gate else ""

    @property
    def ood_score(self) -> float | None:
        return self.gate.ood_score if self.gate else None

    @property
    def advice(self) -> str:
        return self.gate.advice if self.gate else ""

    @property
    def diagnosis_shown(self) -> bool:
        """False when the gate stopped the photo: the files and the web page then carry no probabilities and no
        top-5, so that nobody reads a diagnosis into a photo the model cannot judge (docs/prediction.md). The
        object keeps them for research code (e.g. what a degraded photo would have been called)."""
        return not self.stopped

    def to_dict(self) -> dict:
        """One element of ``dermlens predict --format json``; a stopped photo's has no top5 and no probabilities."""
        shown = self.diagnosis_shown
        return {
            "image": self.image,
            "error": self.error,
            "triage": str(self.triage or ""),
            "modality": self.modality,
            "modality_source": self.modality_source,
            "quality": self.quality,
            "ood_score": self.ood_score,
            "advice": self.advice,
            "top5": [{"node": n, "probability": p} for n, p in self.top5] if shown else [],
            "probabilities": self.probabilities if shown else {},
        }


Prediction = Analysis  # the name of earlier versions' result; the same object


__all__ = ["Analysis", "Prediction"]
