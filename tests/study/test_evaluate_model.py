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



def test_each_image_is_called_at_the_operating_point_predict_applies_to_it(tiny_model_dir, synthetic_parts, tmp_path):
    """A dermoscopic photo is referred at the dermoscopic threshold, a clinical one at the clinical threshold, and
    one of unknown modality at the pooled one: the call `dermlens predict --modality M` makes for it."""
    import dataclasses
    import json
    import shutil
    from collections import Counter

    from dermlens.taxonomy import default_taxonomy
    from dermlens.taxonomy.triage import refers

    taxonomy = default_taxonomy()
    modalities = ["dermoscopic", "clinical", "unknown"]
    records = [dataclasses.replace(r, modality=modalities[k % 3])
               for k, r in enumerate(synthetic_parts["test"] + synthetic_parts["val"])]
    before = evaluate_model(tiny_model_dir, records, num_workers=0, progress=False, n_boot=5)
    p_malignant = before.node_probs[:, list(taxonomy).index("malignant")]

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    low, middle, high = (float(q) for q in np.quantile(p_malignant, [0.25, 0.5, 0.75]))  # far apart: it shows
    base = {"node": "malignant", "target_sensitivity": 0.9, "chosen_on": "test"}
    config["operating_point"] = {**base, "threshold": middle}
    config["operating_points"] = {"dermoscopic": {**base, "threshold": high}, "clinical": {**base, "threshold": low}}
    (model_dir / "config.json").write_text(json.dumps(config))

    result = evaluate_model(model_dir, records, num_workers=0, progress=False, n_boot=5)
    task = result.metrics["malignant_vs_benign"]
    thresholds = {"dermoscopic": high, "clinical": low, "unknown": middle}
    positive = np.array([r.node == "malignant" or "malignant" in taxonomy.ancestors(r.node) for r in records])
    called = np.array([refers(p, thresholds[r.modality]) for p, r in zip(p_malignant, records)])
    assert task["threshold"] == "per photo (its operating point)"
    assert task["sensitivity"] == called[positive].mean()
    assert task["specificity"] == (~called[~positive]).mean()
    pooled_only = np.array([refers(p, middle) for p in p_malignant])
    assert (called != pooled_only).any()  # the per-modality points changed calls: the test can tell them apart
    applied = result.metrics["operating_points"]
    counts = Counter("pooled" if r.modality == "unknown" else r.modality for r in records)
    assert {k: v["images"] for k, v in applied.items()} == dict(counts)
    assert applied["dermoscopic"]["threshold"] == high and applied["pooled"]["threshold"] == middle
