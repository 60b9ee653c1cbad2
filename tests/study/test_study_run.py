"""The study end to end on a tiny synthetic set: folds, predictions, metrics.json, report.html, rebuild, full mode."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dermlens.data.datasets import load_records
from dermlens.data.synthetic import make_synthetic_dataset
from dermlens.evaluate.operating_point import threshold_for_sensitivity
from dermlens.study.design import StudyConfig, load_fold, make_folds, read_records, space_classes
from dermlens.study.run import run_study
from dermlens.study.analysis import StudyPredictions, analyse_study
from dermlens.taxonomy import ClassAssignment, default_taxonomy
from dermlens.taxonomy.partition import esteva_max_class_size

FOLDS = 3


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("study-data"), n_per_class=15, size=64, seed=1)


@pytest.fixture(scope="module")
def readers_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("readers") / "readers.csv"
    path.write_text("task,modality,reader,sensitivity,specificity,source\n"
                    "melanoma_vs_nevus,,always right,1.0,1.0,made up for the test\n"
                    "melanoma_vs_nevus,,always wrong,0.0,0.0,made up for the test\n"
                    "melanoma_vs_nevus,clinical,other modality,0.5,0.5,made up for the test\n")
    return path


@pytest.fixture(scope="module")
def fast_study(tiny_data, readers_csv, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study-fast")
    cfg = StudyConfig(folds=FOLDS, image_size=64, num_workers=0, head_iterations=50, n_boot=40, tsne_points=60,
                      saliency_per_class=1)
    run_study(tiny_data, out, cfg, readers=readers_csv, progress=False)
    return out


def test_report_and_metrics_are_written_with_the_expected_keys(fast_study):
    html = (fast_study / "report.html").read_text()
    metrics = json.loads((fast_study / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    for key in ("study", "config", "ablation", "folds", "confusion", "isic", "binary", "calibration",
                "tsne", "saliency"):
        assert key in metrics, key
    assert set(metrics["ablation"]) == {"three_way", "nine_way", "training_classes"}
    assert "nine_way" not in metrics["ablation"]["three_way"]  # a 3-class model cannot answer 9-way questions
    assert {"three_way", "nine_way", "training_classes"} <= set(metrics["ablation"]["training_classes"])
    assert len(metrics["folds"]) == FOLDS
    assert set(metrics["confusion"]) == {"three_way", "nine_way", "training_classes"}
    n = metrics["study"]["n_usable"]
    for level in metrics["confusion"].values():
        assert np.asarray(level["counts"]).sum() == n  # every image tested exactly once
    assert {"melanoma_vs_nevus:synthetic", "carcinoma_vs_keratosis:synthetic"} <= set(metrics["binary"]["tasks"])
    task = metrics["binary"]["tasks"]["melanoma_vs_nevus:synthetic"]
    assert 0 <= task["auc"] <= 1 and task["auc_ci95"][0] <= task["auc"] <= task["auc_ci95"][1]
    assert 0 <= task["partial_auc_above_80_sensitivity"] <= 0.2
    for name in ("uncalibrated", "temperature_scaled"):
        assert 0 <= metrics["calibration"][name]["ece"] <= 1
    # Self-contained: figures embedded, nothing fetched from elsewhere.
    assert html.count("data:image/png;base64,") >= 6
    assert "src=\"http" not in html and "<link" not in html and "<script" not in html
    assert "SYNTHETIC" in html
    assert metrics["saliency"]["status"] == "ok" and metrics["saliency"]["cases"]
    for case in metrics["saliency"]["cases"]:
        for name in case["overlays"].values():
            assert (fast_study / "saliency" / name).is_file()


def test_readers_are_counted_against_the_curve_by_task_and_modality(fast_study):
    task = json.loads((fast_study / "metrics.json").read_text())["binary"]["tasks"]["melanoma_vs_nevus:synthetic"]
    names = {r["reader"]: r for r in task["readers"]}
    assert set(names) == {"always right", "always wrong"}  # the clinical reader is not drawn on a synthetic curve
    assert names["always wrong"]["below_curve"] and not names["always right"]["below_curve"]
    assert task["readers_below_curve"] == 1 and task["readers_total"] == 2


def test_folds_are_grouped_and_validation_is_carved_from_training(fast_study):
    pred = fast_study / "predictions"
    rows = read_records(pred / "records.csv")
    group = [r["group"] for r in rows]
    seen_test = []
    for k in range(FOLDS):
        saved = load_fold(pred, "training_classes", k)
        test, val = set(saved["test_index"].tolist()), set(saved["val_index"].tolist())
        assert not test & val
        assert not {group[i] for i in test} & {group[i] for i in val}, "a lesion is in a fold's test and validation parts"
        assert all(rows[i]["fold"] == k for i in test)
        seen_test += list(test)
    assert sorted(seen_test) == list(range(len(rows)))  # every image in exactly one test fold


def test_operating_points_are_chosen_on_validation_not_test(fast_study):
    sp = StudyPredictions(fast_study)
    metrics = json.loads((fast_study / "metrics.json").read_text())
    task = metrics["binary"]["tasks"]["malignant_vs_benign:synthetic"]
    rule = next(op for op in task["operating_points"] if op["fixed"] == "sensitivity" and op["target"] == 0.9)
    column = sp.node_ids.index("malignant")
    used = 0
    for k in range(FOLDS):
        part = sp.fold("training_classes", k)
        idx = part["val_index"]
        y = np.array([sp.taxonomy.ancestor_at_level(sp.nodes[i], 1) == "malignant" for i in idx])
        if y.all() or not y.any():
            continue
        expected = threshold_for_sensitivity(y, part["val_node_probs"][:, column], 0.9)
        assert rule["per_fold"][used]["threshold"] == pytest.approx(expected)
        used += 1
    assert used == len(rule["per_fold"]) > 0


def test_exported_model_reproduces_fold_zero_predictions(fast_study):
    from dermlens.predict import Predictor

    saved = load_fold(fast_study / "predictions", "training_classes", 0)
    rows = read_records(fast_study / "predictions" / "records.csv")
    predictor = Predictor(fast_study / "model")
    paths = [rows[i]["path"] for i in saved["test_index"][:8]]
    probs = np.array([[p.probabilities[c.node] for c in predictor.config.classes] for p in predictor.predict(paths)])
    assert np.allclose(probs, np.exp(saved["test_log_probs"][:8]), atol=1e-5)


def test_report_rebuilds_from_saved_predictions(fast_study, readers_csv, tmp_path):
    from dermlens.study.report import build_report

    original = json.loads((fast_study / "metrics.json").read_text())
    path = build_report(fast_study, tmp_path, readers=readers_csv, n_boot=40, progress=False)
    rebuilt = json.loads((tmp_path / "metrics.json").read_text())
    assert path == tmp_path / "report.html" and path.is_file()
    assert rebuilt["ablation"] == original["ablation"]
    assert rebuilt["binary"] == original["binary"]
    assert rebuilt["calibration"] == original["calibration"]


def test_label_spaces_of_the_ablation():
    tax = default_taxonomy()
    nodes = ["melanoma"] * 5 + ["melanocytic_nevus"] * 9 + ["basal_cell_carcinoma"] * 3 + ["actinic_keratosis"] * 2
    three = space_classes("three_way", tax, nodes, 1)
    nine = space_classes("nine_way", tax, nodes, 1)
    assert [c.node for c in three] == ["benign", "malignant"] and [c.count for c in three] == [9, 10]
    assert [c.node for c in nine] == ["benign_melanocytic", "malignant_melanocytic", "malignant_epidermal"]
    assert ClassAssignment(tax, nine).class_index("actinic_keratosis") == 2
    fine = space_classes("training_classes", tax, nodes, 4)
    assert {c.node for c in fine} >= {"melanoma", "melanocytic_nevus"}
    assert esteva_max_class_size(10015) == 77 and esteva_max_class_size(50) == 1


def test_make_folds_rejects_more_folds_than_groups(tiny_data):
    records = load_records(tiny_data)
    with pytest.raises(ValueError, match="n_folds"):
        make_folds(records, len({r.group for r in records}) + 1, 0.15, 0)


@pytest.mark.slow
def test_full_mode_fine_tunes_per_fold_and_space(tiny_data, tmp_path):
    """Full mode reuses the training recipe; at one step per model it checks the wiring, not accuracy."""
    cfg = StudyConfig(mode="full", folds=2, image_size=64, num_workers=0, n_boot=20, tsne_points=40,
                      spaces=("three_way", "training_classes"),
                      saliency_per_class=1,
                      train={"epochs": 1, "max_steps_per_epoch": 1, "batch_size": 8, "patience": 1})
    run_study(tiny_data, tmp_path, cfg, progress=False)
    metrics = analyse_study(tmp_path, n_boot=20, progress=False)
    assert set(metrics["ablation"]) == {"three_way", "training_classes"}
    # The direct 3-way model was trained on the first-level classes only.
    study = json.loads((tmp_path / "predictions" / "study.json").read_text())
    assert {c["node"] for c in study["classes"]["three_way"][0]} == {"benign", "malignant"}
    assert (tmp_path / "folds" / "training_classes-fold0" / "model" / "config.json").is_file()
    assert (tmp_path / "report.html").is_file()


def test_linear_probe_learns_and_reads_raw_features():
    from dermlens.study.probe import L2_GRID, train_linear_head

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (3, 32))
    y = np.repeat([0, 1, 2], [120, 40, 20])  # imbalanced, as real data is
    x = (centres[y] + rng.normal(0, 1.5, (len(y), 32))) * 50 + 7  # far from unit scale: folding must undo it
    tr, va, te = np.arange(len(y)) % 3 == 0, np.arange(len(y)) % 3 == 1, np.arange(len(y)) % 3 == 2
    head = train_linear_head(x[tr], y[tr], x[va], y[va], 3, StudyConfig(), seed=0)
    import torch

    with torch.no_grad():
        predicted = head(torch.from_numpy(x[te]).float()).argmax(1).numpy()
    recalls = [(predicted[y[te] == c] == c).mean() for c in range(3)]
    assert min(recalls) > 0.8, recalls  # the rare class too (class-balanced loss)
    assert head.l2 in L2_GRID


def test_confusion_keeps_ties_in_their_own_column():
    from dermlens.study.analysis import confusion

    result = confusion(["a", "a", "b"], ["a", "(tie)", "b"], ["a", "b"])
    assert result["classes"] == ["a", "b", "(tie)"]
    assert result["counts"][0] == [1, 0, 1] and result["row_normalised"][0] == [0.5, 0.0, 0.5]
    assert confusion(["a", "b"], ["a", "b"], ["a", "b"])["classes"] == ["a", "b"]


def test_pooled_datasets_keep_their_groups_apart(tmp_path):
    from dermlens.study.run import load_study_records

    first = make_synthetic_dataset(tmp_path / "clinic_a", n_per_class=3, size=32, seed=0)
    second = make_synthetic_dataset(tmp_path / "clinic_b", n_per_class=3, size=32, seed=0)  # same lesion ids
    records = load_study_records([first, second])
    groups = {r.group for r in records}
    assert len(records) == 30 and len(groups) == 2 * len({r.group for r in load_records(first)})
    assert all(g.startswith(("clinic_a:", "clinic_b:")) for g in groups)


def test_isic_metrics_fall_back_to_training_classes_when_labels_nest():
    from types import SimpleNamespace

    from dermlens.study.analysis import isic_metrics
    from dermlens.taxonomy import TrainingClass

    tax = default_taxonomy()
    # "actinic_keratosis" nests under "keratinocyte_intraepithelial_neoplasia" (HAM10000's akiec + a finer dataset).
    nodes = ["keratinocyte_intraepithelial_neoplasia", "actinic_keratosis", "melanocytic_nevus", "melanocytic_nevus"]
    classes = [TrainingClass("melanocytic_nevus", 2), TrainingClass("keratinocyte_intraepithelial_neoplasia", 2)]
    log_probs = np.log(np.array([[0.2, 0.8], [0.3, 0.7], [0.9, 0.1], [0.4, 0.6]]))
    part = {"classes": classes, "test_index": np.arange(4), "test_log_probs": log_probs}
    sp = SimpleNamespace(nodes=nodes, node_ids=list(tax), taxonomy=tax, n_folds=1)
    pooled = {"index": np.arange(4), "fold": np.zeros(4, int), "node_probs": None, "parts": [part]}
    result = isic_metrics(sp, pooled)
    assert result["level"].startswith("training classes")
    assert result["classes"] == ["melanocytic_nevus", "keratinocyte_intraepithelial_neoplasia"]
    assert result["balanced_multiclass_accuracy"] == pytest.approx((1 / 2 + 1) / 2)  # nevus 1 of 2, the other 2 of 2
