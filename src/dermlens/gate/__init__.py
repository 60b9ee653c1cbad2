"""Know when not to answer: a gate before the diagnosis (not skin, poor photo, out of distribution).

``gate.gate`` decides, ``gate.quality`` measures focus, exposure and resolution, ``gate.fit`` fits the heads and
chooses the thresholds on data, ``gate.data`` makes the photos it is fitted and measured on.
"""
from dermlens.gate.gate import ADVICE, GATE_FILE, NOT_CHECKED, VERDICTS, Gate, GateThresholds, GateVerdict, not_checked
from dermlens.gate.quality import QualityMeasures, QualityThresholds

__all__ = ["ADVICE", "GATE_FILE", "NOT_CHECKED", "VERDICTS", "Gate", "GateThresholds", "GateVerdict",
           "QualityMeasures", "QualityThresholds", "not_checked"]
