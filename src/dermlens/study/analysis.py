"""Every figure of the study, computed from its saved predictions alone (so ``dermlens report`` can rebuild them).

Per fold and label space, ``predictions/`` holds the log-probabilities of the fold's test images and of the
validation images carved from its training part. From them:

- the ablation: 3-way and 9-way accuracy (and ISIC balanced accuracy) of the models trained on 3 classes, on 9
  classes and on the partitioned training classes, mean ± s.d. over folds;
- the main model (training classes): confusion matrices at the 3-way, 9-way and training-class levels; the ISIC
  multi-class metrics on the dataset's own classes; the paper's binary tasks per modality with ROC curves,
  AUC with a group-bootstrap 95% CI, partial AUC above 80% sensitivity, operating points chosen on each fold's
  validation part and applied to its test part, and readers drawn against the curve; calibration before and
  after temperature scaling fitted on validation.

Accuracies count ties as wrong; all images of every fold's test part are pooled for curves and matrices.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve
from tqdm.auto import tqdm

from dermlens.evaluate.calibration import apply_temperature, calibration_summary, fit_temperature
from dermlens.evaluate.classification import BINARY_TASKS, binary_task
from dermlens.evaluate.isic_metrics import (
    accuracy,
    argmax_ties_wrong,
    balanced_multiclass_accuracy,
    isic_summary,
    partial_auc_above_sensitivity,
)
from dermlens.evaluate.operating_point import threshold_for_sensitivity, threshold_for_specificity
from dermlens.evaluate.readers import load_readers, readers_below_curve
from dermlens.study.design import PREDICTIONS, RECORDS_FILE, STUDY_FILE, load_fold, read_records, targets_for
from dermlens.taxonomy import ClassAssignment, Taxonomy, TrainingClass, TreeSum, default_taxonomy, refers

SENSITIVITY_TARGETS = (0.90, 0.95)  # specificity at fixed sensitivity
SPECIFICITY_TARGETS = (0.80, 0.90)  # sensitivity at fixed specificity
MIN_SENSITIVITY = 0.8  # partial AUC


def _mean_sd(values) -> dict:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return {"mean": None, "sd": None, "n_folds": 0}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n_folds": int(len(v))}


class StudyPredictions:
    """The saved predictions of one study, with node probabilities computed on demand."""

    def __init__(self, study_dir: str | Path, taxonomy: Taxonomy | None = None):
        self.dir = Path(study_dir)
        pred = self.dir / PREDICTIONS
        if not (pred / STUDY_FILE).is_file():
            raise FileNotFoundError(f"{pred / STUDY_FILE}: no saved study here (run `dermlens study --out {self.dir}`)")
        self.study = json.loads((pred / STUDY_FILE).read_text())
        self.taxonomy = taxonomy or default_taxonomy()
        if self.study.get("taxonomy_fingerprint") not in (None, self.taxonomy.fingerprint()):
            raise ValueError(f"{pred / STUDY_FILE}: made with taxonomy {self.study['taxonomy_version']}, "
                             f"not the loaded {self.taxonomy.version}")
        self.records = read_records(pred / RECORDS_FILE)
        self.nodes = [r["node"] for r in self.records]
        self.groups = np.array([r["group"] for r in self.records])
        self.modality = np.array([r["modality"] for r in self.records])
        self.node_ids = list(self.taxonomy)
        self.n_folds = len(self.study["folds"])
        self.spaces = self.study["spaces"]
        self._pred = pred

    def classes(self, space: str, fold: int) -> list[TrainingClass]:
        return [TrainingClass.from_dict(c) for c in self.study["classes"][space][fold]]

    def fold(self, space: str, fold: int) -> dict:
        """test/val indices, log-probabilities and node probabilities of one fold's model."""
        saved = load_fold(self._pred, space, fold)
        classes = self.classes(space, fold)
        tree_sum = TreeSum(self.taxonomy, classes)
        saved["classes"] = classes
        for part in ("test", "val"):
            saved[f"{part}_node_probs"] = tree_sum(np.exp(saved[f"{part}_log_probs"].astype(np.float64)))
        return saved

    def pooled(self, space: str) -> dict:
        """All folds' test predictions of a space, concatenated (with each image's fold)."""
        parts = [self.fold(space, k) for k in range(self.n_folds)]
        return {
            "parts": parts,
            "index": np.concatenate([p["test_index"] for p in parts]),
            "fold": np.concatenate([np.full(len(p["test_index"]), k) for k, p in enumerate(parts)]),
            "node_probs": np.concatenate([p["test_node_probs"] for p in parts]),
        }


# ---------------------------------------------------------------------------------------------- multi-class levels
def level_scores(node_probs: np.ndarray, node_ids: list[str], truth_nodes: list[str], taxonomy: Taxonomy,
                 level: int) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """(targets, probabilities over the level's classes present in the truth, class names); None if < 2 classes."""
    truth = [taxonomy.ancestor_at_level(n, level) for n in truth_nodes]
    keep = np.array([t is not None for t in truth])
    classes = sorted({t for t in truth if t}, key=node_ids.index)
    if len(classes) < 2:
        return None
    cols = [node_ids.index(c) for c in classes]
    y = np.array([classes.index(t) for t in truth if t])
    return y, node_probs[keep][:, cols], classes


def fold_accuracies(sp: StudyPredictions, space: str, saved: dict) -> dict:
    """3-way, 9-way and (main model) training-class accuracies of one fold's test part."""
    nodes = [sp.nodes[i] for i in saved["test_index"]]
    out = {}
    levels = [1] if space == "three_way" else [1, 2]
    for level in levels:
        scored = level_scores(saved["test_node_probs"], sp.node_ids, nodes, sp.taxonomy, level)
        if scored:
            y, p, _ = scored
            name = "three_way" if level == 1 else "nine_way"
            out[name] = {"accuracy": accuracy(y, p), "balanced_accuracy": balanced_multiclass_accuracy(y, p)}
    if space == "training_classes":
        y = targets_for(ClassAssignment(sp.taxonomy, saved["classes"]), nodes)
        keep = y >= 0
        if len(np.unique(y[keep])) >= 2:
            lp = saved["test_log_probs"][keep]
            out["training_classes"] = {"accuracy": accuracy(y[keep], lp),
                                       "balanced_accuracy": balanced_multiclass_accuracy(y[keep], lp),
                                       "n_classes": len(saved["classes"])}
    return out


def confusion(truth: list[str], predicted: list[str], classes: list[str]) -> dict:
    """Counts and row-normalised; undecided predictions (ties) get a column of their own, so rows sum to the truth."""
    if "(tie)" in predicted:
        classes = list(classes) + ["(tie)"]
    counts = confusion_matrix(truth, predicted, labels=classes)
    rows = counts.sum(1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros_like(counts, dtype=float), where=rows > 0)
    return {"classes": classes, "counts": counts.tolist(), "row_normalised": np.round(normalised, 4).tolist()}


def main_model_confusions(sp: StudyPredictions, pooled: dict) -> dict:
    nodes = [sp.nodes[i] for i in pooled["index"]]
    out = {}
    for level, name in ((1, "three_way"), (2, "nine_way")):
        scored = level_scores(pooled["node_probs"], sp.node_ids, nodes, sp.taxonomy, level)
        if scored:
            y, p, classes = scored
            predicted = argmax_ties_wrong(p)
            names = classes + ["(tie)"]
            out[name] = confusion([classes[t] for t in y], [names[q] for q in predicted], classes)
    truth, predicted = [], []
    for part in pooled["parts"]:
        class_nodes = [c.node for c in part["classes"]]
        y = targets_for(ClassAssignment(sp.taxonomy, part["classes"]), [sp.nodes[i] for i in part["test_index"]])
        q = argmax_ties_wrong(part["test_log_probs"])
        truth += [class_nodes[t] for t in y[y >= 0]]
        predicted += [class_nodes[t] if t >= 0 else "(tie)" for t in q[y >= 0]]
    order = [n for n in sp.node_ids if n in set(truth) | set(predicted)]
    out["training_classes"] = confusion(truth, predicted, order)
    return out


def isic_metrics(sp: StudyPredictions, pooled: dict) -> dict | None:
    """ISIC metrics on the dataset's own classes (as the ISIC challenge scores HAM10000's seven), pooled and per fold.

    When the dataset's labels nest (pooled datasets labelled at different depths), they are no partition; the
    training classes are one by construction and are used instead, if every fold has the same ones.
    """
    classes = sorted(set(sp.nodes[i] for i in pooled["index"]), key=sp.node_ids.index)
    if len(classes) < 2:
        return None
    nested = [c for c in classes if any(a in classes for a in sp.taxonomy.ancestors(c))]
    if not nested:
        cols = [sp.node_ids.index(c) for c in classes]
        y = np.array([classes.index(sp.nodes[i]) for i in pooled["index"]])
        p, fold, level = pooled["node_probs"][:, cols], pooled["fold"], "dataset classes"
    else:
        class_lists = {tuple(c.node for c in part["classes"]) for part in pooled["parts"]}
        if len(class_lists) != 1:
            return {"skipped": f"dataset classes nest ({nested[:5]}) and the training classes differ between folds"}
        classes = list(class_lists.pop())
        ys, ps, folds = [], [], []
        for k, part in enumerate(pooled["parts"]):
            y = targets_for(ClassAssignment(sp.taxonomy, part["classes"]), [sp.nodes[i] for i in part["test_index"]])
            ys.append(y[y >= 0])
            ps.append(np.exp(part["test_log_probs"][y >= 0].astype(np.float64)))
            folds.append(np.full(int((y >= 0).sum()), k))
        y, p, fold = np.concatenate(ys), np.concatenate(ps), np.concatenate(folds)
        level = f"training classes (the dataset's labels nest, e.g. {', '.join(nested[:3])})"
    summary = isic_summary(y, p, classes, MIN_SENSITIVITY)
    summary["level"] = level
    per_fold = [balanced_multiclass_accuracy(y[fold == k], p[fold == k]) for k in range(sp.n_folds) if (fold == k).any()]
    summary["balanced_multiclass_accuracy_over_folds"] = _mean_sd(per_fold)
    return summary


# ---------------------------------------------------------------------------------------------- binary tasks
def _membership(sp: StudyPredictions, index: np.ndarray, positive: str, negative: str) -> tuple[np.ndarray, np.ndarray]:
    under = lambda node, top: node == top or top in sp.taxonomy.ancestors(node)  # noqa: E731
    nodes = [sp.nodes[i] for i in index]
    return np.array([under(n, positive) for n in nodes]), np.array([under(n, negative) for n in nodes])


def operating_points(sp: StudyPredictions, parts: list[dict], positive: str, negative: str, modality: str | None) -> list[dict]:
    """Thresholds chosen on each fold's validation images, applied to that fold's test images, then pooled."""
    column = sp.node_ids.index(positive)
    rules = [("sensitivity", t) for t in SENSITIVITY_TARGETS] + [("specificity", t) for t in SPECIFICITY_TARGETS]
    results = []
    for kind, target in rules:
        tp = fn = tn = fp = 0
        per_fold, skipped = [], 0
        for part in parts:
            sets = {}
            for name in ("val", "test"):
                idx = part[f"{name}_index"]
                pos, neg = _membership(sp, idx, positive, negative)
                if modality:
                    pos, neg = pos & (sp.modality[idx] == modality), neg & (sp.modality[idx] == modality)
                keep = pos | neg
                sets[name] = (pos[keep], part[f"{name}_node_probs"][keep, column])
            (yv, sv), (yt, st) = sets["val"], sets["test"]
            if yv.all() or not yv.any() or not len(yt):
                skipped += 1
                continue
            chooser = threshold_for_sensitivity if kind == "sensitivity" else threshold_for_specificity
            threshold = chooser(yv, sv, target)
            called = refers(st, threshold)
            f_tp, f_fn = int((called & yt).sum()), int((~called & yt).sum())
            f_tn, f_fp = int((~called & ~yt).sum()), int((called & ~yt).sum())
            tp, fn, tn, fp = tp + f_tp, fn + f_fn, tn + f_tn, fp + f_fp
            per_fold.append({"threshold": float(threshold),
                             "sensitivity": f_tp / (f_tp + f_fn) if f_tp + f_fn else None,
                             "specificity": f_tn / (f_tn + f_fp) if f_tn + f_fp else None})
        if not per_fold:
            continue
        results.append({
            "rule": f"{kind} >= {target:g} on validation", "fixed": kind, "target": target,
            "test_sensitivity": tp / (tp + fn) if tp + fn else None,
            "test_specificity": tn / (tn + fp) if tn + fp else None,
            "test_counts": {"tp": tp, "fn": fn, "tn": tn, "fp": fp},
            "sensitivity_over_folds": _mean_sd([f["sensitivity"] for f in per_fold]),
            "specificity_over_folds": _mean_sd([f["specificity"] for f in per_fold]),
            "per_fold": per_fold, "folds_skipped": skipped,
        })
    return results


def binary_tasks(sp: StudyPredictions, pooled: dict, readers: list, n_boot: int, progress: bool) -> dict:
    index = pooled["index"]
    modalities = sorted(set(sp.modality[index]))
    scopes = [(m, sp.modality[index] == m) for m in modalities]
    if len(modalities) > 1:
        scopes.append(("all", np.ones(len(index), dtype=bool)))
    results, notes = {}, []
    jobs = [(t, m, mask) for t in BINARY_TASKS for m, mask in scopes]
    for task, modality, mask in tqdm(jobs, desc="binary tasks (bootstrap)", disable=not progress, leave=False):
        positive, negative = BINARY_TASKS[task]
        column = sp.node_ids.index(positive)
        probs, nodes = pooled["node_probs"][mask], [sp.nodes[i] for i in index[mask]]
        result = binary_task(probs, sp.node_ids, nodes, sp.taxonomy, positive, negative,
                             groups=sp.groups[index[mask]], n_boot=n_boot)
        if result is None:
            continue
        pos, neg = _membership(sp, index[mask], positive, negative)
        keep = pos | neg
        y, score = pos[keep], probs[keep, column]
        if not score.any():
            notes.append(f"{task} ({modality}): no training class lies at or below {positive!r}; not scored")
            continue
        fpr, tpr, _ = roc_curve(y, score)
        folds = pooled["fold"][mask][keep]
        fold_auc = [float(roc_auc_score(y[folds == k], score[folds == k])) for k in range(sp.n_folds)
                    if len(np.unique(y[folds == k])) == 2]
        result.update(
            modality=modality, positive=positive, negative=negative, score=f"P({positive})",
            partial_auc_above_80_sensitivity=partial_auc_above_sensitivity(y, score, MIN_SENSITIVITY),
            auc_over_folds=_mean_sd(fold_auc),
            roc={"fpr": np.round(fpr, 5).tolist(), "tpr": np.round(tpr, 5).tolist()},
            operating_points=operating_points(sp, pooled["parts"], positive, negative,
                                              None if modality == "all" else modality),
        )
        matching = [r for r in readers if r.applies_to(task, modality)]
        if matching:
            drawn = readers_below_curve(fpr, tpr, matching)
            result["readers"] = drawn
            result["readers_below_curve"] = sum(r["below_curve"] for r in drawn)
            result["readers_total"] = len(drawn)
        results[f"{task}:{modality}"] = result
    return {"tasks": results, "notes": notes}


# ---------------------------------------------------------------------------------------------- calibration
def calibration(sp: StudyPredictions, parts: list[dict]) -> dict:
    """Training-class probabilities before and after temperature scaling (T fitted per fold on validation)."""
    before, after, targets, temperatures = [], [], [], []
    for part in parts:
        assignment = ClassAssignment(sp.taxonomy, part["classes"])
        yv = targets_for(assignment, [sp.nodes[i] for i in part["val_index"]])
        yt = targets_for(assignment, [sp.nodes[i] for i in part["test_index"]])
        if (yv >= 0).sum() == 0 or (yt >= 0).sum() == 0:
            continue
        t = fit_temperature(part["val_log_probs"][yv >= 0], yv[yv >= 0])
        temperatures.append(t)
        test_lp = part["test_log_probs"][yt >= 0]
        before.append(apply_temperature(test_lp, 1.0))
        after.append(apply_temperature(test_lp, t))
        targets.append(yt[yt >= 0])
    if not targets:
        return {"skipped": "no fold had validation and test images covered by its classes"}
    # Folds may differ in their number of classes; pool top-label confidence and correctness, which are comparable.
    y = np.concatenate(targets)
    summary = {}
    for name, probs in (("uncalibrated", before), ("temperature_scaled", after)):
        width = max(p.shape[1] for p in probs)
        padded = np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1]))) for p in probs])
        summary[name] = calibration_summary(padded, y)
    summary["temperatures"] = temperatures
    summary["temperature_over_folds"] = _mean_sd(temperatures)
    summary["level"] = "training classes (top-label confidence)"
    return summary


# ---------------------------------------------------------------------------------------------- all of it
def analyse_study(study_dir: str | Path, readers: str | Path | None = None, n_boot: int = 1000,
                  progress: bool = True, taxonomy: Taxonomy | None = None) -> dict:
    sp = StudyPredictions(study_dir, taxonomy)
    reader_list = load_readers(readers) if readers else []
    study = sp.study
    metrics: dict = {
        "study": {k: study.get(k) for k in ("source", "data", "synthetic", "n_records", "n_usable", "taxonomy_version",
                                            "fixed_split_ignored", "timings", "features_cached", "model_dir")},
        "config": study["config"],
        "decode_errors": study["decode_errors"],
        "readers_file": str(readers) if readers else None,
    }
    metrics["study"]["n_groups"] = int(len(set(sp.groups[[r["index"] for r in sp.records if r["ok"]]])))
    metrics["study"]["modalities"] = sorted(set(sp.modality))
    metrics["study"]["dataset_classes"] = {n: sp.nodes.count(n) for n in sorted(set(sp.nodes), key=sp.node_ids.index)}

    # Ablation and per-fold table.
    per_fold: list[dict] = [dict(f) for f in study["folds"]]
    ablation: dict = {}
    for space in sp.spaces:
        rows = []
        for k in range(sp.n_folds):
            acc = fold_accuracies(sp, space, sp.fold(space, k))
            per_fold[k][space] = acc
            rows.append(acc)
        ablation[space] = {}
        for level in ("three_way", "nine_way", "training_classes"):
            if any(level in r for r in rows):
                ablation[space][level] = {
                    "accuracy": _mean_sd([r[level]["accuracy"] for r in rows if level in r]),
                    "balanced_accuracy": _mean_sd([r[level]["balanced_accuracy"] for r in rows if level in r]),
                }
        ablation[space]["n_classes_per_fold"] = [len(c) for c in study["classes"][space]]
    metrics["ablation"] = ablation
    metrics["folds"] = per_fold

    # The main model: training classes.
    pooled = sp.pooled("training_classes")
    metrics["confusion"] = main_model_confusions(sp, pooled)
    metrics["isic"] = isic_metrics(sp, pooled)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        metrics["binary"] = binary_tasks(sp, pooled, reader_list, n_boot, progress)
    for f in per_fold:
        f["binary_auc"] = {}
    for key, task in metrics["binary"]["tasks"].items():  # the per-fold AUCs, for the per-fold table
        pos, neg = _membership(sp, pooled["index"], task["positive"], task["negative"])
        scope = pos | neg
        if task["modality"] != "all":
            scope &= sp.modality[pooled["index"]] == task["modality"]
        score = pooled["node_probs"][:, sp.node_ids.index(task["positive"])]
        for k in range(sp.n_folds):
            m = scope & (pooled["fold"] == k)
            if len(np.unique(pos[m])) == 2:
                per_fold[k]["binary_auc"][key] = float(roc_auc_score(pos[m], score[m]))
    metrics["calibration"] = calibration(sp, pooled["parts"])
    tsne = sp._pred / "tsne.npz"
    if tsne.is_file():
        with np.load(tsne, allow_pickle=False) as t:
            metrics["tsne"] = {"n_points": int(len(t["index"])), "classes": sorted(set(t["labels"].tolist()))}
    metrics["saliency"] = study.get("saliency")
    return metrics
