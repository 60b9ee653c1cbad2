"""The study's HTML report on a hand-made metrics dict: self-contained, escaped (Jinja2 autoescaping), strict JSON
beside it."""
from __future__ import annotations

import json

from dermlens.study.report import write_report


def _task(readers=True):
    task = {
        "task": "melanoma vs melanocytic_nevus", "n_positive": 3, "n_negative": 4, "auc": 0.75,
        "auc_ci95": [0.5, 0.9], "auc_over_folds": {"mean": 0.7, "sd": 0.1, "n_folds": 2},
        "partial_auc_above_80_sensitivity": 0.05, "modality": "dermoscopic", "positive": "melanoma",
        "negative": "melanocytic_nevus", "score": "P(melanoma)",
        "roc": {"fpr": [0, 0, 0.5, 0.5, 1], "tpr": [0, 0.5, 0.5, 1, 1]},
        "operating_points": [{"rule": "sensitivity >= 0.9 on validation", "fixed": "sensitivity", "target": 0.9,
                              "test_sensitivity": 1.0, "test_specificity": 0.5,
                              "test_counts": {"tp": 3, "fn": 0, "tn": 2, "fp": 2},
                              "sensitivity_over_folds": {"mean": 1.0, "sd": 0.0, "n_folds": 2},
                              "specificity_over_folds": {"mean": 0.5, "sd": 0.1, "n_folds": 2},
                              "per_fold": [], "folds_skipped": 0}],
    }
    if readers:
        task["readers"] = [{"task": "melanoma_vs_nevus", "reader": "<b>Dr. X</b>", "sensitivity": 0.4,
                            "specificity": 0.7, "modality": "", "n_readers": "1", "source": "test & co",
                            "model_sensitivity_at_reader_specificity": 0.5, "below_curve": True}]
        task["readers_below_curve"], task["readers_total"] = 1, 1
    return task


def _metrics():
    acc = {"mean": 0.8, "sd": 0.05, "n_folds": 2}
    confusion = {"classes": ["a<x>", "b"], "counts": [[3, 1], [0, 4]], "row_normalised": [[0.75, 0.25], [0, 1]]}
    bins = {"edges": [0, 0.5, 1], "confidence": [0.3, 0.8], "accuracy": [0.25, 0.9], "count": [4, 4]}
    cal = {"n": 8, "ece": 0.07, "nll": 0.4, "accuracy": 0.6, "mean_confidence": 0.55, "reliability": bins}
    return {
        "study": {"source": "some/data", "data": "some/data", "synthetic": False, "n_records": 8, "n_usable": 8,
                  "taxonomy_version": "t", "fixed_split_ignored": False, "model_dir": None, "n_groups": 6,
                  "modalities": ["dermoscopic"], "dataset_classes": {"melanoma": 3, "melanocytic_nevus": 5},
                  "timings": {"total_seconds": 12.0}},
        "config": {"mode": "fast", "val_fraction": 0.15, "head_epochs": 5, "arch": "efficientnet_lite0",
                   "image_size": 64, "max_class_size": 1.0, "train": {}},
        "decode_errors": ["x.jpg: <bad> image"], "readers_file": "r.csv",
        "ablation": {"three_way": {"three_way": {"accuracy": acc, "balanced_accuracy": acc}, "n_classes_per_fold": [2, 2]},
                     "training_classes": {"three_way": {"accuracy": acc, "balanced_accuracy": acc},
                                          "training_classes": {"accuracy": acc, "balanced_accuracy": acc},
                                          "n_classes_per_fold": [2, 2]}},
        "folds": [{"fold": k, "n_train": 3, "n_val": 1, "n_test": 4, "binary_auc": {"melanoma_vs_nevus:dermoscopic": 0.7},
                   "three_way": {"three_way": {"accuracy": 0.8}},
                   "training_classes": {"three_way": {"accuracy": 0.8}, "training_classes": {"balanced_accuracy": 0.7}}}
                  for k in range(2)],
        "confusion": {"three_way": confusion, "training_classes": confusion},
        "isic": {"level": "dataset classes", "classes": ["melanoma", "melanocytic_nevus"], "support": [3, 5],
                                 "balanced_multiclass_accuracy": 0.7, "accuracy": 0.75, "n_ties": 0,
                                 "recall": [0.66, None], "auc": [0.8, float("nan")], "mean_auc": 0.8,
                                 "partial_auc_above_0.8_sensitivity": [0.1, None], "partial_auc_min_sensitivity": 0.8,
                                 "balanced_multiclass_accuracy_over_folds": acc},
        "binary": {"tasks": {"melanoma_vs_nevus:dermoscopic": _task()}, "notes": ["a note"]},
        "calibration": {"uncalibrated": cal, "temperature_scaled": cal, "temperatures": [1.5, 1.7],
                        "temperature_over_folds": acc},
        "saliency": {"status": "skipped"},
    }


def test_report_is_self_contained_escaped_and_json_is_strict(tmp_path):
    path = write_report(tmp_path, _metrics())
    page = path.read_text()
    assert path.name == "report.html"
    assert page.count("data:image/png;base64,") == 4  # ROC, two confusion matrices, reliability
    assert "<b>Dr. X</b>" not in page and "&lt;b&gt;Dr. X&lt;/b&gt;" in page
    assert "x.jpg: &lt;bad&gt; image" in page
    assert "readers below curve" in page and ">1/1<" in page
    assert "<script" not in page and "src=\"http" not in page
    text = (tmp_path / "metrics.json").read_text()
    metrics = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(AssertionError(f"{c} in metrics.json")))
    assert metrics["isic"]["auc"] == [0.8, None]  # NaN written as null


def test_report_without_readers_or_tasks_still_renders(tmp_path):
    metrics = _metrics()
    metrics["binary"] = {"tasks": {}, "notes": []}
    metrics["calibration"] = {"skipped": "no fold had validation images"}
    page = write_report(tmp_path, metrics).read_text()
    assert "neither task" in page and "no fold had validation images" in page
