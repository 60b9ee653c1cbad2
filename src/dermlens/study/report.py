"""The study's page: ``report.html`` (figures embedded as PNG), rendered from ``templates/study.html`` with
autoescaping, and ``metrics.json`` with every number."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dermlens.report import figures
from dermlens.report.html import file_img, fmt, img, mean_sd, render_page, write_metrics
from dermlens.study.design import PREDICTIONS, SPACE_TITLES


def _dataset_title(study: dict) -> str:
    if study.get("synthetic"):
        return "synthetic set"
    names = []
    for part in str(study["source"]).split(" + "):
        path = Path(part)
        names.append(path.parent.name if path.suffix.lower() == ".csv" else path.name)
    return " + ".join(n for n in names if n) or "data"


def _context(study_dir: Path, m: dict) -> dict:
    """What ``templates/study.html`` shows: the metrics as rows of plain text (the template escapes them) and the
    figures as embedded images."""
    s, cfg = m["study"], m["config"]
    t = s.get("timings") or {}
    summary = [
        ["data", s["source"]],
        ["images", f"{s['n_usable']} usable of {s['n_records']} ({len(m['decode_errors'])} failed to decode), "
                   f"{s['n_groups']} groups (lesions/patients)"],
        ["classes in the data", ", ".join(f"{k} ({v})" for k, v in s["dataset_classes"].items())],
        ["modalities", ", ".join(s["modalities"])],
        ["design", f"{len(m['folds'])}-fold cross-validation grouped by lesion/patient, stratified by diagnosis; "
                   f"per fold {cfg['val_fraction']:.0%} of the training part held out (grouped) for model selection, "
                   "temperature scaling and operating points" + (
                       "; the dataset's fixed split is ignored (k-fold over all images)" if s.get("fixed_split_ignored") else "")],
        ["mode", ("fast: frozen ImageNet backbone, features computed once; per fold and label space a linear head "
                  "(L2-regularised logistic regression, class-balanced loss, L2 strength chosen on validation)")
                 if cfg["mode"] == "fast" else f"full fine-tuning per fold and label space ({json.dumps(cfg['train'])})"],
        ["backbone", f"{cfg['arch']} at {cfg['image_size'] or 'its own'} px; max_class_size {cfg['max_class_size']:g}"],
        ["time", ", ".join(f"{k.replace('_seconds', '')} {v:.0f} s" for k, v in t.items())
                 + (" (features from the cache of an earlier run)" if s.get("features_cached") else "") or "–"],
        ["taxonomy", s["taxonomy_version"]],
    ]
    ablation = []
    for space, levels in m["ablation"].items():
        row = [SPACE_TITLES[space] + f" ({', '.join(map(str, sorted(set(levels['n_classes_per_fold']))))} classes)"]
        for level in ("three_way", "nine_way", "training_classes"):
            row += [mean_sd(levels.get(level, {}).get("accuracy")), mean_sd(levels.get(level, {}).get("balanced_accuracy"))]
        ablation.append(row)

    tasks = m["binary"]["tasks"]
    isic, cal, sal = m.get("isic"), m["calibration"], m.get("saliency") or {}
    context = {
        "title": "dermlens study report", "dataset_title": _dataset_title(s), "synthetic": bool(s.get("synthetic")),
        "summary": summary, "ablation": ablation, "notes": m["binary"]["notes"],
        "tasks": [[key, f"{task['n_positive']} / {task['n_negative']}",
                   f"{task['auc']:.3f} ({fmt(task['auc_ci95'][0])}–{fmt(task['auc_ci95'][1])})",
                   mean_sd(task["auc_over_folds"]), fmt(task["partial_auc_above_80_sensitivity"], 4),
                   f"{task['readers_below_curve']}/{task['readers_total']}" if "readers" in task else "–"]
                  for key, task in tasks.items()],
        "roc_figures": [img(figures.roc_figure(task, f"{key}  (score {task['score']})"), f"ROC {key}")
                        for key, task in tasks.items()],
        "operating_points": [[key, op["rule"], fmt(op["test_sensitivity"]), fmt(op["test_specificity"]),
                              mean_sd(op["sensitivity_over_folds"]), mean_sd(op["specificity_over_folds"]),
                              str(op["folds_skipped"])] for key, task in tasks.items() for op in task["operating_points"]],
        "readers": [[key, r["reader"], fmt(r["sensitivity"]), fmt(r["specificity"]),
                     fmt(r["model_sensitivity_at_reader_specificity"]), "yes" if r["below_curve"] else "no", r["source"]]
                    for key, task in tasks.items() for r in task.get("readers", [])],
        "readers_file": str(m["readers_file"]) if m.get("readers_file") else "",
        "isic": isic, "isic_rows": [], "calibration": cal, "calibration_rows": [], "reliability_figure": "",
        "confusion_figures": [img(figures.confusion_figure(m["confusion"][level], title), f"confusion {title}")
                              for level, title in (("three_way", "3-way"), ("nine_way", "9-way"),
                                                   ("training_classes", "training classes")) if level in m["confusion"]],
        "tsne": None, "saliency": None, "fast": cfg["mode"] == "fast",
        "decode_errors": m["decode_errors"], "predictions": str(study_dir / PREDICTIONS), "study_dir": str(study_dir),
    }
    if isic and "classes" in isic:
        pauc = isic[f"partial_auc_above_{isic['partial_auc_min_sensitivity']:g}_sensitivity"]
        context["isic_rows"] = [[c, str(n), fmt(r), fmt(a), fmt(p, 4)]
                                for c, n, r, a, p in zip(isic["classes"], isic["support"], isic["recall"], isic["auc"], pauc)]
    if "skipped" not in cal:
        context["calibration_rows"] = [
            [name.replace("_", " "), fmt(cal[name]["ece"]), fmt(cal[name]["nll"]), fmt(cal[name]["accuracy"]),
             fmt(cal[name]["mean_confidence"])] for name in ("uncalibrated", "temperature_scaled")]
        context["reliability_figure"] = img(figures.reliability_figure(cal), "reliability diagram")
    tsne = study_dir / PREDICTIONS / "tsne.npz"
    if tsne.is_file():
        with np.load(tsne, allow_pickle=False) as t:
            context["tsne"] = {"figure": img(figures.tsne_figure(t["embedding"], t["labels"]), "t-SNE"),
                               "n": len(t["index"])}
    if sal.get("status") == "ok" and sal.get("cases"):
        folder = study_dir / sal["dir"]
        order = [m for m in ("input_gradient", "gradcam") if m in sal["methods"]]  # the paper's map first
        order += [m for m in sal["methods"] if m not in order]
        context["saliency"] = {"explained": sal["explained"], "failures": sal.get("failures") or [], "cases": [
            {"correct": case["correct"], "truth": case["truth_node"], "predicted": case["predicted_node"],
             "probability": case.get("probability", float("nan")), "file": Path(case["path"]).name,
             "images": [file_img(folder / case["overlays"][mth], mth) for mth in order if mth in case["overlays"]]}
            for case in sal["cases"]]}
    spaces, task_keys = list(m["ablation"]), list(tasks)
    context["fold_header"] = (["fold", "train", "val", "test"] + [f"{SPACE_TITLES[s].split()[0]}: 3-way" for s in spaces]
                              + [f"{SPACE_TITLES[s].split()[0]}: 9-way" for s in spaces if s != "three_way"]
                              + ["training-class bal. acc."] + [f"AUC {k}" for k in task_keys])
    context["fold_rows"] = [
        [str(f["fold"]), str(f["n_train"]), str(f["n_val"]), str(f["n_test"])]
        + [fmt(f[s].get("three_way", {}).get("accuracy")) for s in spaces]
        + [fmt(f[s].get("nine_way", {}).get("accuracy")) for s in spaces if s != "three_way"]
        + [fmt(f["training_classes"].get("training_classes", {}).get("balanced_accuracy"))]
        + [fmt(f["binary_auc"].get(k)) for k in task_keys]
        for f in m["folds"]]
    return context


def write_report(study_dir: str | Path, metrics: dict, out_dir: str | Path | None = None) -> Path:
    """Write ``metrics.json`` and ``report.html`` into ``out_dir`` (default: the study folder); returns the HTML path."""
    study_dir = Path(study_dir)
    out_dir = Path(out_dir) if out_dir else study_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = write_metrics(out_dir / "metrics.json", metrics)
    render_page(out_dir / "report.html", "study.html", "dermlens.study", **_context(study_dir, metrics))
    return out_dir / "report.html"


def build_report(study_dir: str | Path, out_dir: str | Path | None = None, readers: str | Path | None = None,
                 n_boot: int = 1000, progress: bool = True) -> Path:
    """``dermlens report``: recompute every figure from the saved predictions and write the report again."""
    from dermlens.study.analysis import analyse_study

    return write_report(study_dir, analyse_study(study_dir, readers=readers, n_boot=n_boot, progress=progress), out_dir)
