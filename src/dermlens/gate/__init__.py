"""Know when not to answer: a gate before the diagnosis (not skin, poor photo, out of distribution).

``gate.gate`` decides (its verdict: ``gate.verdict``), ``gate.quality`` measures focus, exposure and resolution, ``gate.fit`` fits the heads and
chooses the thresholds on data, ``gate.data`` makes the photos it is fitted and measured on.
"""
from dermlens.gate.gate import GATE_FILE, Gate, GateThresholds
from dermlens.gate.verdict import ADVICE, NOT_CHECKED, VERDICTS, GateVerdict, Verdict, not_checked
from dermlens.gate.quality import QualityMeasures, QualityThresholds

__all__ = ["ADVICE", "GATE_FILE", "NOT_CHECKED", "VERDICTS", "Gate", "GateThresholds", "GateVerdict",
           "QualityMeasures", "QualityThresholds", "Verdict", "not_checked"]
