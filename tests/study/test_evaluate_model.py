"""A saved model scored on labelled data (`dermlens evaluate`); `dermlens operating-point` is tested with its
command in tests/study/test_operating_point_command.py."""
from __future__ import annotations

import numpy as np

from dermlens.study.evaluate import evaluate_model


def test_a_model_is_scored_on_every_image_at_its_classes_and_on_the_binary_tasks(tiny_model_dir, synthetic_parts):
    test = synthetic_parts["test"]
    result = evaluate_model(tiny_model_dir, test, num_workers=0, progress=False, n_boot=20)
    metrics = result.metrics
    assert metrics["dataset_classes"]["n"] == sum(sum(row) for row in metrics["dataset_classes"]["confusion"]) == len(test)
    assert "malignant_vs_benign" in metrics
    assert result.truth == [r.node for r in test]
    assert result.node_probs.shape[0] == len(test)
    np.testing.assert_allclose(result.node_probs[:, 0], 1.0, atol=2e-6)  # the root holds all the probability
