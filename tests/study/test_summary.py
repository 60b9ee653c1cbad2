"""A finished study read back from its folder: the headline `dermlens study` prints, the readers a rebuild reuses."""
from __future__ import annotations

import json

from dermlens.study.summary import headline, readers_used, study_summary


def mean_sd(mean, sd=0.01):
    return {"accuracy": {"mean": mean, "sd": sd}, "balanced_accuracy": {"mean": mean, "sd": sd}}


METRICS = {
    "config": {"folds": 9},
    "study": {"timings": {"total_seconds": 90.0}},
    "ablation": {
        "three_way": {"three_way": mean_sd(0.8123), "n_classes_per_fold": [3] * 9},
        "training_classes": {"three_way": mean_sd(0.85), "nine_way": mean_sd(None), "n_classes_per_fold": [5] * 9},
    },
    "binary": {"tasks": {"melanoma_vs_nevus:synthetic": {"auc": 0.9, "auc_ci95": [0.85, 0.95], "n_positive": 40,
                                                         "n_negative": 80}}},
}


def test_headline_gives_each_space_its_accuracies_and_each_task_its_auc_with_ci():
    lines = headline(METRICS)
    assert lines[0] == "Ablation (accuracy, mean ± s.d. over 9 folds):"
    assert lines[1].split() == ["trained", "on", "three_way", "three_way", "0.812", "±", "0.010"]
    assert "nine_way" not in lines[2]  # a level no fold could score is left out, not printed as nan
    assert lines[3] == "  melanoma_vs_nevus:synthetic: AUC 0.900 (95% CI 0.850-0.950), 40 vs 80"


def test_summary_points_at_the_report_and_says_how_long_it_took(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    last = study_summary(tmp_path).splitlines()[-1]
    assert last == f"Report: {tmp_path / 'report.html'}  (numbers: {tmp_path / 'metrics.json'}; 1.5 min)"
    rebuilt = {**METRICS, "study": {"timings": None}}  # a rebuilt report has no timings of its own
    (tmp_path / "metrics.json").write_text(json.dumps(rebuilt))
    assert study_summary(tmp_path).endswith(f"(numbers: {tmp_path / 'metrics.json'})")


def test_readers_used_reads_the_saved_study(tmp_path):
    assert readers_used(tmp_path) is None  # not a study folder (yet): no readers to reuse
    (tmp_path / "predictions").mkdir()
    (tmp_path / "predictions" / "study.json").write_text(json.dumps({"readers": "/site/readers.csv"}))
    assert readers_used(tmp_path) == "/site/readers.csv"
