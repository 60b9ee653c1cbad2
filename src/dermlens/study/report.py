"""The study's page: ``report.html`` (figures embedded as PNG) and ``metrics.json`` with every number."""
from __future__ import annotations

import html
import json

import numpy as np
from pathlib import Path

from dermlens.report import figures
from dermlens.report.html import file_img, fmt, img, mean_sd, table, write_metrics, write_page
from dermlens.study.design import PREDICTIONS, SPACE_TITLES


def _dataset_title(study: dict) -> str:
    if study.get("synthetic"):
        return "synthetic set"
    names = []
    for part in str(study["source"]).split(" + "):
        path = Path(part)
        names.append(path.parent.name if path.suffix.lower() == ".csv" else path.name)
    return " + ".join(n for n in names if n) or "data"


def _sections(study_dir: Path, m: dict) -> list[str]:
    s, cfg = m["study"], m["config"]
    parts = [f"<h1>dermlens study: {html.escape(_dataset_title(s))}</h1>"]
    if s.get("synthetic"):
        parts.append("<p class=warn><b>SYNTHETIC DATA.</b> Every image in this study was drawn by a program; the "
                     "figures show that the machinery works, not how well a model works on real skin.</p>")
    t = s.get("timings") or {}
    parts.append(table(["", ""], [
        ["data", html.escape(s["source"])],
        ["images", f"{s['n_usable']} usable of {s['n_records']} ({len(m['decode_errors'])} failed to decode), "
                   f"{s['n_groups']} groups (lesions/patients)"],
        ["classes in the data", ", ".join(f"{html.escape(k)} ({v})" for k, v in s["dataset_classes"].items())],
        ["modalities", ", ".join(s["modalities"])],
        ["design", f"{len(m['folds'])}-fold cross-validation grouped by lesion/patient, stratified by diagnosis; "
                   f"per fold {cfg['val_fraction']:.0%} of the training part held out (grouped) for model selection, "
                   "temperature scaling and operating points" + (
                       "; the dataset's fixed split is ignored (k-fold over all images)" if s.get("fixed_split_ignored") else "")],
        ["mode", ("fast: frozen ImageNet backbone, features computed once; per fold and label space a linear head "
                  "(L2-regularised logistic regression, class-balanced loss, L2 strength chosen on validation)")
                 if cfg["mode"] == "fast"
                 else f"full fine-tuning per fold and label space ({html.escape(json.dumps(cfg['train']))})"],
        ["backbone", f"{cfg['arch']} at {cfg['image_size'] or 'its own'} px; max_class_size {cfg['max_class_size']:g}"],
        ["time", ", ".join(f"{k.replace('_seconds', '')} {v:.0f} s" for k, v in t.items())
                 + (" (features from the cache of an earlier run)" if s.get("features_cached") else "") or "–"],
        ["taxonomy", s["taxonomy_version"]],
    ], left=2))

    # Ablation
    parts.append("<h2>Ablation: what the model is trained on (mean ± s.d. over folds)</h2>")
    rows = []
    for space, levels in m["ablation"].items():
        row = [SPACE_TITLES[space] + f" ({', '.join(map(str, sorted(set(levels['n_classes_per_fold']))))} classes)"]
        for level in ("three_way", "nine_way", "training_classes"):
            row += [mean_sd(levels.get(level, {}).get("accuracy")), mean_sd(levels.get(level, {}).get("balanced_accuracy"))]
        rows.append(row)
    parts.append(table(["trained on", "3-way acc.", "3-way bal. acc.", "9-way acc.", "9-way bal. acc.",
                         "training-class acc.", "training-class bal. acc."], rows))
    parts.append("<p class=note>3-way and 9-way accuracies are over the first- and second-level classes present in the "
                 "data (argmax of the summed node probabilities; ties count as wrong). The 3-class model cannot "
                 "answer 9-way questions. Balanced accuracy is the ISIC challenge's mean recall.</p>")

    # Binary tasks
    parts.append("<h2>Binary tasks (main model: partitioned training classes)</h2>")
    tasks = m["binary"]["tasks"]
    rows, figs = [], []
    for key, task in tasks.items():
        readers = f"{task['readers_below_curve']}/{task['readers_total']}" if "readers" in task else "–"
        rows.append([html.escape(key), f"{task['n_positive']} / {task['n_negative']}",
                     f"{task['auc']:.3f} ({fmt(task['auc_ci95'][0])}–{fmt(task['auc_ci95'][1])})",
                     mean_sd(task["auc_over_folds"]), fmt(task["partial_auc_above_80_sensitivity"], 4), readers])
        figs.append(img(figures.roc_figure(task, f"{key}  (score {task['score']})"), f"ROC {key}"))
    if rows:
        parts.append(table(["task:modality", "positives / negatives", "AUC (95% CI, group bootstrap)",
                             "AUC over folds", "pAUC above 80% sens. (raw, max 0.2)", "readers below curve"], rows))
        parts.append("<div class=figs>" + "".join(figs) + "</div>")
    for note in m["binary"]["notes"]:
        parts.append(f"<p class=note>{html.escape(note)}</p>")
    if not tasks:
        parts.append("<p class=note>The data holds neither task's two sides.</p>")
    op_rows = []
    for key, task in tasks.items():
        for op in task["operating_points"]:
            op_rows.append([html.escape(key), op["rule"], fmt(op["test_sensitivity"]), fmt(op["test_specificity"]),
                            mean_sd(op["sensitivity_over_folds"]), mean_sd(op["specificity_over_folds"]),
                            str(op["folds_skipped"])])
    if op_rows:
        parts.append("<h3>Operating points: threshold chosen on each fold's validation part, applied to its test part</h3>")
        parts.append(table(["task", "rule", "test sensitivity", "test specificity", "sens. over folds",
                             "spec. over folds", "folds skipped"], op_rows, left=2))
    reader_rows = [[html.escape(key), html.escape(r["reader"]), fmt(r["sensitivity"]), fmt(r["specificity"]),
                    fmt(r["model_sensitivity_at_reader_specificity"]), "yes" if r["below_curve"] else "no",
                    html.escape(r["source"])]
                   for key, task in tasks.items() for r in task.get("readers", [])]
    if reader_rows:
        parts.append("<h3>Readers</h3>")
        parts.append(table(["task", "reader", "sensitivity", "specificity", "model sens. at that spec.",
                             "below curve", "source"], reader_rows, left=2, text_last=True))
        parts.append("<p class=note>Reader points come from published studies on their own images "
                     f"({html.escape(str(m.get('readers_file')))}): context, not a head-to-head comparison.</p>")
    elif m.get("readers_file"):
        parts.append(f"<p class=note>No reader in {html.escape(str(m['readers_file']))} matches these tasks and "
                     "modalities.</p>")

    # ISIC
    isic = m.get("isic")
    if isic and "classes" in isic:
        parts.append(f"<h2>ISIC multi-class metrics on the {html.escape(isic['level'].split(' (')[0])} "
                     "(main model, pooled test folds)</h2>")
        if "(" in isic["level"]:
            parts.append(f"<p class=note>Scored on the {html.escape(isic['level'])}.</p>")
        parts.append(f"<p>Balanced multi-class accuracy {isic['balanced_multiclass_accuracy']:.3f} "
                     f"(over folds {mean_sd(isic['balanced_multiclass_accuracy_over_folds'])}); accuracy "
                     f"{isic['accuracy']:.3f}; mean AUC {fmt(isic['mean_auc'])}; ties {isic['n_ties']}.</p>")
        pauc_key = f"partial_auc_above_{isic['partial_auc_min_sensitivity']:g}_sensitivity"
        parts.append(table(["class", "n", "recall", "AUC", "pAUC above 80% sens."], [
            [html.escape(c), str(n), fmt(r), fmt(a), fmt(p, 4)]
            for c, n, r, a, p in zip(isic["classes"], isic["support"], isic["recall"], isic["auc"], isic[pauc_key])
        ]))

    elif isic and "skipped" in isic:
        parts.append(f"<h2>ISIC multi-class metrics</h2><p class=note>Not computed: {html.escape(isic['skipped'])}.</p>")

    # Confusion matrices
    parts.append("<h2>Confusion matrices (main model, pooled test folds)</h2>")
    for level, title in (("three_way", "3-way"), ("nine_way", "9-way"), ("training_classes", "training classes")):
        if level in m["confusion"]:
            parts.append(img(figures.confusion_figure(m["confusion"][level], title), f"confusion {title}"))

    # Calibration
    cal = m["calibration"]
    parts.append("<h2>Calibration</h2>")
    if "skipped" in cal:
        parts.append(f"<p class=note>{html.escape(cal['skipped'])}</p>")
    else:
        parts.append(table(["", "ECE", "NLL", "accuracy", "mean confidence"], [
            [name.replace("_", " "), fmt(cal[name]["ece"]), fmt(cal[name]["nll"]), fmt(cal[name]["accuracy"]),
             fmt(cal[name]["mean_confidence"])] for name in ("uncalibrated", "temperature_scaled")
        ]))
        parts.append(f"<p class=note>Temperature fitted per fold on validation: {mean_sd(cal['temperature_over_folds'], 2)}. "
                     "Other sections use the uncalibrated probabilities.</p>")
        parts.append(img(figures.reliability_figure(cal), "reliability diagram"))

    # t-SNE
    tsne = study_dir / PREDICTIONS / "tsne.npz"
    if tsne.is_file():
        with np.load(tsne, allow_pickle=False) as t:
            parts.append("<h2>t-SNE of the last hidden layer</h2>")
            parts.append(img(figures.tsne_figure(t["embedding"], t["labels"]), "t-SNE"))
            parts.append(f"<p class=note>{len(t['index'])} images"
                         + (" (frozen ImageNet features: the layer the heads read)" if cfg["mode"] == "fast"
                            else " (fold 0's test images through fold 0's model)") + ".</p>")

    # Saliency
    sal = m.get("saliency") or {}
    if sal.get("status") == "ok" and sal.get("cases"):
        folder = study_dir / sal["dir"]
        order = [m for m in ("input_gradient", "gradcam") if m in sal["methods"]]  # the paper's map first
        order += [m for m in sal["methods"] if m not in order]
        parts.append("<h2>Saliency: correct and incorrect cases per class</h2>")
        parts.append(f"<p class=note>Left: the paper's map (L1 norm over colour channels of the input gradient, "
                     f"lightly smoothed); right: Grad-CAM. Each explains {html.escape(sal['explained'])}.</p><div class=grid>")
        for case in sal["cases"]:
            verdict = "<span class=ok>correct</span>" if case["correct"] else "<span class=bad>wrong</span>"
            images = "".join(file_img(folder / case["overlays"][mth], mth) for mth in order if mth in case["overlays"])
            parts.append(f"<div class=case>{verdict}: truth <b>{html.escape(case['truth_node'])}</b>, predicted "
                         f"<b>{html.escape(case['predicted_node'])}</b> (p={case.get('probability', float('nan')):.2f})<br>"
                         f"{images}<br><span class=note>{html.escape(Path(case['path']).name)}</span></div>")
        parts.append("</div>")
        if sal.get("failures"):
            parts.append(f"<p class=note>{len(sal['failures'])} case(s) failed: "
                         + html.escape("; ".join(sal["failures"][:5])) + "</p>")

    # Per-fold table
    parts.append("<h2>Per fold</h2>")
    spaces = list(m["ablation"])
    task_keys = list(tasks)
    header = ["fold", "train", "val", "test"] + [f"{SPACE_TITLES[s].split()[0]}: 3-way" for s in spaces] + \
        [f"{SPACE_TITLES[s].split()[0]}: 9-way" for s in spaces if s != "three_way"] + ["training-class bal. acc."] + \
        [f"AUC {html.escape(k)}" for k in task_keys]
    rows = []
    for f in m["folds"]:
        row = [str(f["fold"]), str(f["n_train"]), str(f["n_val"]), str(f["n_test"])]
        row += [fmt(f[s].get("three_way", {}).get("accuracy")) for s in spaces]
        row += [fmt(f[s].get("nine_way", {}).get("accuracy")) for s in spaces if s != "three_way"]
        row += [fmt(f["training_classes"].get("training_classes", {}).get("balanced_accuracy"))]
        row += [fmt(f["binary_auc"].get(k)) for k in task_keys]
        rows.append(row)
    parts.append(table(header, rows))
    if m["decode_errors"]:
        parts.append("<h3>Images that failed to decode (left out)</h3><ul>"
                     + "".join(f"<li>{html.escape(e)}</li>" for e in m["decode_errors"][:50]) + "</ul>")
    parts.append(f"<p class=note>Every number is in metrics.json beside this file. Predictions: "
                 f"{html.escape(str(study_dir / PREDICTIONS))}; rebuild with <code>dermlens report --study "
                 f"{html.escape(str(study_dir))}</code>. A research tool, not a medical device.</p>")
    return parts


def write_report(study_dir: str | Path, metrics: dict, out_dir: str | Path | None = None) -> Path:
    """Write ``metrics.json`` and ``report.html`` into ``out_dir`` (default: the study folder); returns the HTML path."""
    study_dir = Path(study_dir)
    out_dir = Path(out_dir) if out_dir else study_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = write_metrics(out_dir / "metrics.json", metrics)
    write_page(out_dir / "report.html", "dermlens study report", "\n".join(_sections(study_dir, metrics)))
    return out_dir / "report.html"


def build_report(study_dir: str | Path, out_dir: str | Path | None = None, readers: str | Path | None = None,
                 n_boot: int = 1000, progress: bool = True) -> Path:
    """``dermlens report``: recompute every figure from the saved predictions and write the report again."""
    from dermlens.study.analysis import analyse_study

    return write_report(study_dir, analyse_study(study_dir, readers=readers, n_boot=n_boot, progress=progress), out_dir)
