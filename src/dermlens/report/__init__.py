"""The study's report: one self-contained ``report.html`` (figures embedded as PNG) and ``metrics.json`` beside it."""
from dermlens.report.html import build_report, write_report

__all__ = ["build_report", "write_report"]
