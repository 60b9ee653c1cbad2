"""Dermatologists' operating points beside the model's ROC curve, as in Esteva et al.'s Fig. 3.

A reader is one (sensitivity, specificity) point. The model beats a reader when the reader's point lies below the
model's ROC curve: at the reader's specificity the model reaches a higher sensitivity.
"""
from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SAMPLE_READERS = Path(__file__).parent / "readers" / "sample_readers.csv"
REQUIRED_COLUMNS = ("task", "reader", "sensitivity", "specificity")


@dataclass(frozen=True)
class Reader:
    task: str
    reader: str
    sensitivity: float
    specificity: float
    modality: str = ""  # empty: drawn on the task's curve of every modality
    n_readers: str = ""
    source: str = ""

    def applies_to(self, task: str, modality: str) -> bool:
        return self.task == task and (not self.modality or self.modality == modality)

    def to_dict(self) -> dict:
        return asdict(self)


class ReadersFileError(ValueError):
    pass


def load_readers(path: str | Path) -> list[Reader]:
    """Readers from a CSV with columns task, reader, sensitivity, specificity (+ modality, n_readers, source).

    Sensitivity and specificity are fractions in [0, 1]; percentages (e.g. 82) are refused rather than guessed at.
    """
    path = Path(path)
    if not path.is_file():
        raise ReadersFileError(f"{path}: readers file not found")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
        columns = rows[0].keys() if rows else []
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ReadersFileError(f"{path}: missing column(s) {missing}; need {list(REQUIRED_COLUMNS)}")
    readers = []
    for line, row in enumerate(rows, start=2):
        values = {}
        for name in ("sensitivity", "specificity"):
            try:
                values[name] = float(row[name])
            except (TypeError, ValueError):
                raise ReadersFileError(f"{path}, line {line}: {name} {row[name]!r} is not a number") from None
            if not 0 <= values[name] <= 1:
                raise ReadersFileError(f"{path}, line {line}: {name} {values[name]} is not a fraction in [0, 1]")
        if not (row.get("task") or "").strip():
            raise ReadersFileError(f"{path}, line {line}: empty task")
        readers.append(Reader(
            task=row["task"].strip(), reader=(row.get("reader") or f"reader {line - 1}").strip(),
            modality=(row.get("modality") or "").strip(), n_readers=(row.get("n_readers") or "").strip(),
            source=(row.get("source") or "").strip(), **values,
        ))
    return readers


def curve_sensitivity_at(fpr, tpr, false_positive_rate: float) -> float:
    """The ROC curve's sensitivity at a false-positive rate (linear between points; the top of a vertical step)."""
    fpr, tpr = np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)
    i = int(np.searchsorted(fpr, false_positive_rate, side="right")) - 1
    if i < 0:
        return 0.0
    if fpr[i] == false_positive_rate or i == len(fpr) - 1:
        return float(tpr[i])
    x0, x1, y0, y1 = fpr[i], fpr[i + 1], tpr[i], tpr[i + 1]
    return float(y0 + (y1 - y0) * (false_positive_rate - x0) / (x1 - x0))


def readers_below_curve(fpr, tpr, readers: list[Reader]) -> list[dict]:
    """For each reader: the model's sensitivity at the reader's specificity and whether the reader is below it."""
    out = []
    for r in readers:
        model_sensitivity = curve_sensitivity_at(fpr, tpr, 1 - r.specificity)
        out.append({**r.to_dict(), "model_sensitivity_at_reader_specificity": model_sensitivity,
                    "below_curve": bool(r.sensitivity < model_sensitivity)})
    return out
