"""`dermlens demo`: fine-tune on one grouped split of the synthetic set and report test figures."""
from __future__ import annotations

import json
from dataclasses import replace

from dermlens.models import read_config
from dermlens.study.main_job import DEMO_TRAIN_CONFIG, run_main_job


def test_demo_job_trains_one_class_per_disease_and_reports_test_figures(tmp_path):
    cfg = replace(DEMO_TRAIN_CONFIG, image_size=64, epochs=1, max_steps_per_epoch=2, num_workers=0, batch_size=16)
    report = run_main_job(None, tmp_path, cfg, progress=False)
    text = report.read_text()
    assert "SYNTHETIC" in text and "Test-set figures" in text
    config = read_config(tmp_path / "train" / "model")
    # The partition threshold scales with the data: five synthetic diseases give five classes, not one root class.
    assert sorted(config.class_nodes) == sorted(
        ["melanoma", "melanocytic_nevus", "seborrheic_keratosis", "basal_cell_carcinoma", "dermatofibroma"]
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["dataset_classes"]["n"] == sum(sum(row) for row in metrics["dataset_classes"]["confusion"])
    assert "malignant_vs_benign" in metrics
