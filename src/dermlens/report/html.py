"""``report.html``: one file, no external assets (figures are base64 PNG), plus ``metrics.json`` with every number."""
from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np

from dermlens.evaluate.study import PREDICTIONS, SPACE_TITLES
from dermlens.report import figures

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em}th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.warn{background:#fff3cd;border:1px solid #e0c36b;padding:.6em 1em}
.note{color:#555;font-size:.9em}.figs{display:flex;flex-wrap:wrap;gap:1em}img{max-width:100%;height:auto}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:.8em}
.case{border:1px solid #ddd;padding:.4em;font-size:.8em}.case img{width:48%;margin:1%}.ok{color:#176117}.bad{color:#9b1c1c}
"""


def _clean(value):
    """JSON-safe: NaN/inf to None, numpy scalars to Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _file_img(path: Path, alt: str) -> str:
    return _img(path.read_bytes(), alt) if path.is_file() else f"<p class=note>({html.escape(alt)}: file missing)</p>"


def _f(x, digits=3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ms(d: dict | None, digits=3) -> str:
    if not d or d.get("mean") is None:
        return "–"
    return f"{d['mean']:.{digits}f} ± {d['sd']:.{digits}f}"


def _table(header: list[str], rows: list[list[str]], left: int = 1, text_last: bool = False) -> str:
    """Numbers right-aligned; the first ``left`` columns (and the last, for ``text_last``) are text."""
    is_text = lambda i: i < left or (text_last and i == len(header) - 1)  # noqa: E731
    head = "".join(f"<th class=l>{h}</th>" if is_text(i) else f"<th>{h}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f"<td class=l>{c}</td>" if is_text(i) else f"<td>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


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
    parts.append(_table(["", ""], [
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
            row += [_ms(levels.get(level, {}).get("accuracy")), _ms(levels.get(level, {}).get("balanced_accuracy"))]
        rows.append(row)
    parts.append(_table(["trained on", "3-way acc.", "3-way bal. acc.", "9-way acc.", "9-way bal. acc.",
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
                     f"{task['auc']:.3f} ({_f(task['auc_ci95'][0])}–{_f(task['auc_ci95'][1])})",
                     _ms(task["auc_over_folds"]), _f(task["partial_auc_above_80_sensitivity"], 4), readers])
        figs.append(_img(figures.roc_figure(task, f"{key}  (score {task['score']})"), f"ROC {key}"))
    if rows:
        parts.append(_table(["task:modality", "positives / negatives", "AUC (95% CI, group bootstrap)",
                             "AUC over folds", "pAUC above 80% sens. (raw, max 0.2)", "readers below curve"], rows))
        parts.append("<div class=figs>" + "".join(figs) + "</div>")
    for note in m["binary"]["notes"]:
        parts.append(f"<p class=note>{html.escape(note)}</p>")
    if not tasks:
        parts.append("<p class=note>The data holds neither task's two sides.</p>")
    op_rows = []
    for key, task in tasks.items():
        for op in task["operating_points"]:
            op_rows.append([html.escape(key), op["rule"], _f(op["test_sensitivity"]), _f(op["test_specificity"]),
                            _ms(op["sensitivity_over_folds"]), _ms(op["specificity_over_folds"]),
                            str(op["folds_skipped"])])
    if op_rows:
        parts.append("<h3>Operating points: threshold chosen on each fold's validation part, applied to its test part</h3>")
        parts.append(_table(["task", "rule", "test sensitivity", "test specificity", "sens. over folds",
                             "spec. over folds", "folds skipped"], op_rows, left=2))
    reader_rows = [[html.escape(key), html.escape(r["reader"]), _f(r["sensitivity"]), _f(r["specificity"]),
                    _f(r["model_sensitivity_at_reader_specificity"]), "yes" if r["below_curve"] else "no",
                    html.escape(r["source"])]
                   for key, task in tasks.items() for r in task.get("readers", [])]
    if reader_rows:
        parts.append("<h3>Readers</h3>")
        parts.append(_table(["task", "reader", "sensitivity", "specificity", "model sens. at that spec.",
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
                     f"(over folds {_ms(isic['balanced_multiclass_accuracy_over_folds'])}); accuracy "
                     f"{isic['accuracy']:.3f}; mean AUC {_f(isic['mean_auc'])}; ties {isic['n_ties']}.</p>")
        pauc_key = f"partial_auc_above_{isic['partial_auc_min_sensitivity']:g}_sensitivity"
        parts.append(_table(["class", "n", "recall", "AUC", "pAUC above 80% sens."], [
            [html.escape(c), str(n), _f(r), _f(a), _f(p, 4)]
            for c, n, r, a, p in zip(isic["classes"], isic["support"], isic["recall"], isic["auc"], isic[pauc_key])
        ]))

    elif isic and "skipped" in isic:
        parts.append(f"<h2>ISIC multi-class metrics</h2><p class=note>Not computed: {html.escape(isic['skipped'])}.</p>")

    # Confusion matrices
    parts.append("<h2>Confusion matrices (main model, pooled test folds)</h2>")
    for level, title in (("three_way", "3-way"), ("nine_way", "9-way"), ("training_classes", "training classes")):
        if level in m["confusion"]:
            parts.append(_img(figures.confusion_figure(m["confusion"][level], title), f"confusion {title}"))

    # Calibration
    cal = m["calibration"]
    parts.append("<h2>Calibration</h2>")
    if "skipped" in cal:
        parts.append(f"<p class=note>{html.escape(cal['skipped'])}</p>")
    else:
        parts.append(_table(["", "ECE", "NLL", "accuracy", "mean confidence"], [
            [name.replace("_", " "), _f(cal[name]["ece"]), _f(cal[name]["nll"]), _f(cal[name]["accuracy"]),
             _f(cal[name]["mean_confidence"])] for name in ("uncalibrated", "temperature_scaled")
        ]))
        parts.append(f"<p class=note>Temperature fitted per fold on validation: {_ms(cal['temperature_over_folds'], 2)}. "
                     "Other sections use the uncalibrated probabilities.</p>")
        parts.append(_img(figures.reliability_figure(cal), "reliability diagram"))

    # t-SNE
    tsne = study_dir / PREDICTIONS / "tsne.npz"
    if tsne.is_file():
        with np.load(tsne, allow_pickle=False) as t:
            parts.append("<h2>t-SNE of the last hidden layer</h2>")
            parts.append(_img(figures.tsne_figure(t["embedding"], t["labels"]), "t-SNE"))
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
            images = "".join(_file_img(folder / case["overlays"][mth], mth) for mth in order if mth in case["overlays"])
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
        row += [_f(f[s].get("three_way", {}).get("accuracy")) for s in spaces]
        row += [_f(f[s].get("nine_way", {}).get("accuracy")) for s in spaces if s != "three_way"]
        row += [_f(f["training_classes"].get("training_classes", {}).get("balanced_accuracy"))]
        row += [_f(f["binary_auc"].get(k)) for k in task_keys]
        rows.append(row)
    parts.append(_table(header, rows))
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
    metrics = _clean(metrics)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    body = "\n".join(_sections(study_dir, metrics))
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content='width=device-width'>"
            f"<title>dermlens study report</title><style>{CSS}</style></head><body>{body}</body></html>\n")
    (out_dir / "report.html").write_text(page, encoding="utf-8")
    return out_dir / "report.html"


def build_report(study_dir: str | Path, out_dir: str | Path | None = None, readers: str | Path | None = None,
                 n_boot: int = 1000, progress: bool = True) -> Path:
    """``dermlens report``: recompute every figure from the saved predictions and write the report again."""
    from dermlens.evaluate.study_metrics import analyse_study

    return write_report(study_dir, analyse_study(study_dir, readers=readers, n_boot=n_boot, progress=progress), out_dir)
