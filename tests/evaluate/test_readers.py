"""Readers' operating points: the shipped sample file and the below-the-curve count."""
from __future__ import annotations

import pytest

from dermlens.evaluate.readers import (
    SAMPLE_READERS,
    Reader,
    ReadersFileError,
    curve_sensitivity_at,
    load_readers,
    readers_below_curve,
)


def test_sample_file_ships_published_points_with_sources():
    readers = load_readers(SAMPLE_READERS)
    assert readers, "sample readers file is empty"
    marchetti = [r for r in readers if "Marchetti" in r.source]
    assert marchetti and (marchetti[0].sensitivity, marchetti[0].specificity) == (0.82, 0.59)
    for r in readers:
        assert r.task in ("melanoma_vs_nevus", "carcinoma_vs_keratosis", "malignant_vs_benign")
        assert "doi:" in r.source, f"{r.reader}: every sample row must cite its source"


def _reader(sens, spec, name="r"):
    return Reader(task="melanoma_vs_nevus", reader=name, sensitivity=sens, specificity=spec)


def test_readers_below_a_constructed_curve():
    # ROC (FPR, TPR): (0,0) (0,.5) (.5,.5) (.5,1) (1,1)
    fpr, tpr = [0, 0, 0.5, 0.5, 1], [0, 0.5, 0.5, 1, 1]
    readers = [
        _reader(0.90, 0.60, "above: at FPR .4 the model has .5"),
        _reader(0.40, 0.70, "below: at FPR .3 the model has .5"),
        _reader(0.95, 0.40, "below: at FPR .6 the model has 1"),
        _reader(1.00, 0.50, "on the curve (top of the vertical step): not below"),
    ]
    result = readers_below_curve(fpr, tpr, readers)
    assert [r["below_curve"] for r in result] == [False, True, True, False]
    assert sum(r["below_curve"] for r in result) == 2
    assert result[0]["model_sensitivity_at_reader_specificity"] == 0.5


def test_curve_is_interpolated_between_points():
    assert curve_sensitivity_at([0, 1], [0, 1], 0.4) == pytest.approx(0.4)
    assert curve_sensitivity_at([0, 0.2, 1], [0, 0.8, 1], 0.6) == pytest.approx(0.9)


def test_readers_apply_to_their_modality_only():
    r = Reader("melanoma_vs_nevus", "x", 0.8, 0.6, modality="dermoscopic")
    assert r.applies_to("melanoma_vs_nevus", "dermoscopic")
    assert not r.applies_to("melanoma_vs_nevus", "clinical")
    assert Reader("melanoma_vs_nevus", "y", 0.8, 0.6).applies_to("melanoma_vs_nevus", "clinical")


def test_bad_files_are_refused_with_file_and_line(tmp_path):
    percent = tmp_path / "percent.csv"
    percent.write_text("task,reader,sensitivity,specificity\nmelanoma_vs_nevus,a,82,59\n")
    with pytest.raises(ReadersFileError, match=r"percent\.csv, line 2: sensitivity 82"):
        load_readers(percent)
    missing = tmp_path / "missing.csv"
    missing.write_text("task,reader,sensitivity\nmelanoma_vs_nevus,a,0.8\n")
    with pytest.raises(ReadersFileError, match="specificity"):
        load_readers(missing)
