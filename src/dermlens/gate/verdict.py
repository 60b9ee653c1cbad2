"""The gate's verdict on one photo, as a value: what it found (:class:`Verdict`), why, and what follows from it.

A new verdict is a member of :class:`Verdict`, its answer in ``STOPS`` (when it stops the photo) and its advice in
``ADVICE``; every consumer (the Predictor's analysis, batch files, the web service, screening) reads it from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from dermlens.gate.quality import QualityMeasures
from dermlens.taxonomy.triage import Triage


class Verdict(StrEnum):
    OK = "ok"
    NOT_SKIN = "not_skin"  # reason: blank (no contrast at all) or not_skin (the skin head)
    POOR_QUALITY = "poor_quality"  # reason: low_resolution, overexposed, underexposed, out_of_focus
    OUT_OF_DISTRIBUTION = "out_of_distribution"  # skin, but unlike the training photos
    WIDE_FIELD = "wide_field"  # a wider area of skin (a back, an arm, several spots): `dermlens screen` is the tool
    NOT_CHECKED = "not_checked"  # the gate was switched off (--no-gate, research use)

    @property
    def triage(self) -> Triage | None:
        """The answer that replaces the diagnosis, or None when the model may answer."""
        return STOPS.get(self)


# What a stopping verdict tells the user: another photo would help (retake), or would not (cannot_assess).
STOPS: dict[Verdict, Triage] = {
    Verdict.NOT_SKIN: Triage.RETAKE,
    Verdict.POOR_QUALITY: Triage.RETAKE,
    Verdict.OUT_OF_DISTRIBUTION: Triage.CANNOT_ASSESS,
    Verdict.WIDE_FIELD: Triage.RETAKE,
}

VERDICTS = (Verdict.OK, Verdict.NOT_SKIN, Verdict.POOR_QUALITY, Verdict.OUT_OF_DISTRIBUTION, Verdict.WIDE_FIELD)
NOT_CHECKED = Verdict.NOT_CHECKED

# Plain-words advice, by the verdict's reason where it has one (poor_quality), else by the verdict.
ADVICE = {
    "ok": "",
    "not_skin": "This does not look like a photo of skin. Take a photo of the skin spot itself, filling most of "
                "the picture, and try again.",
    "low_resolution": "The photo is too small to judge. Take it again closer to the spot, with the camera's full "
                      "resolution (no screenshots or thumbnails).",
    "overexposed": "The photo is too bright: the spot is washed out. Take it again in daylight without the flash, "
                   "out of direct sunlight.",
    "underexposed": "The photo is too dark. Take it again in daylight or a well-lit room.",
    "out_of_focus": "The photo is blurred. Hold the camera still, tap the spot to focus, and take it again from "
                    "a little further away if the camera cannot focus that close.",
    "wide_field": "This looks like a photo of a wider area of skin (a back, an arm, several spots) rather than of "
                  "one spot. To check many spots at once, use screening (`dermlens screen`); for one spot, take a "
                  "close-up in which the spot fills most of the picture.",
    "out_of_distribution": "This photo is unlike any the model learned from, so its answer would not be reliable. "
                           "It cannot assess this photo; please show the spot to a doctor.",
    "not_checked": "The photo gate was switched off (research use): the answer was given without checking the photo.",
}


@dataclass
class GateVerdict:
    verdict: Verdict  # a Verdict (a plain string of one is converted)
    reason: str = ""  # poor_quality: low_resolution / overexposed / underexposed / out_of_focus; not_skin: blank / not_skin
    p_skin: float | None = None
    p_wide: float | None = None  # P(a wide-field photo of skin), when the gate has a wide-field head
    ood_score: float | None = None  # distance / threshold: above 1 is out of distribution
    measures: QualityMeasures | None = None

    def __post_init__(self) -> None:
        self.verdict = Verdict(self.verdict)

    @property
    def quality(self) -> str:
        """The ``quality`` column of batch files: ``ok``, ``not_skin``, ``poor_quality:<reason>``,
        ``out_of_distribution`` or ``not_checked``."""
        verdict = Verdict(self.verdict)
        return f"{verdict}:{self.reason}" if verdict is Verdict.POOR_QUALITY else str(verdict)

    @property
    def triage(self) -> Triage | None:
        """What replaces refer/reassure, or None when the model may answer."""
        return Verdict(self.verdict).triage

    @property
    def advice(self) -> str:
        verdict = Verdict(self.verdict)
        return ADVICE.get(self.reason if verdict is Verdict.POOR_QUALITY else str(verdict), "")

    @property
    def stopped(self) -> bool:
        return self.triage is not None

    def to_dict(self) -> dict:
        """The verdict as the web service and JSON files give it."""
        return {"verdict": str(self.verdict), "reason": self.reason, "quality": self.quality,
                "ood_score": self.ood_score, "p_skin": self.p_skin, "p_wide": self.p_wide, "advice": self.advice, "stopped": self.stopped}


def not_checked() -> GateVerdict:
    return GateVerdict(Verdict.NOT_CHECKED)


__all__ = ["ADVICE", "NOT_CHECKED", "STOPS", "VERDICTS", "GateVerdict", "Verdict", "not_checked"]
