"""Figures for MODEL_CARD.md: the bundled (or a given) model on HAM10000 test, PH2 and SD-198 clinical photos.

    python benchmarks/model_card.py [--model DIR] [--data-root ../shared/data] [--tta 1] [--out runs/model-card]

Prints every figure with its 95% bootstrap CI (resampled by lesion where the data has lesion ids) and writes them
to <out>/model_card_figures.json. Nothing here is tuned on test data: the operating point is the one stored in the
model, chosen on HAM10000 `val`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from dermlens.data.datasets import load_records
from dermlens.pipeline import evaluate_model
from dermlens.predict import bundled_model_dir
from dermlens.taxonomy import default_taxonomy


def ci(m: dict, key: str) -> str:
    low, high = m[f"{key}_ci95"]
    return f"{m[key]:.3f} [{low:.3f}, {high:.3f}]"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    parser.add_argument("--tta", type=int, default=1)
    parser.add_argument("--split", default="test", help="HAM10000 split to score (test; val for recipe choices)")
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/model-card"))
    args = parser.parse_args(argv)
    model = args.model or bundled_model_dir()
    taxonomy = default_taxonomy()
    figures: dict = {"model": str(model), "tta": args.tta}
    lines: list[str] = []
    started = time.time()

    ham = args.data_root / "ham10000"
    if ham.is_dir():
        records = [r for r in load_records(ham) if r.split == args.split]
        e = evaluate_model(model, records, num_workers=args.workers, tta=args.tta, n_boot=args.boot)
        m = e.metrics
        figures[f"ham10000_{args.split}"] = m
        d = m["dataset_classes"]
        lines += [
            f"HAM10000 {args.split} ({len(records)} images, CIs resampled by lesion)",
            f"  7-class balanced accuracy (mean recall)   {ci(d, 'balanced_accuracy')}   accuracy {d['accuracy']:.3f}",
            f"  per-class recall: " + ", ".join(
                f"{c} {row[i] / max(1, sum(row)):.2f}" for i, (c, row) in enumerate(zip(d["classes"], d["confusion"]))
            ),
            f"  melanoma vs nevus AUC                     {ci(m['melanoma_vs_nevus'], 'auc')}",
            f"  keratinocyte carcinoma vs benign keratosis AUC {ci(m['carcinoma_vs_keratosis'], 'auc')}",
            f"  malignant vs benign AUC                   {ci(m['malignant_vs_benign'], 'auc')}",
            f"  at the operating point (P(malignant) >= {m['malignant_vs_benign']['threshold']:.3f}): "
            f"sensitivity {ci(m['malignant_vs_benign'], 'sensitivity')}, specificity {ci(m['malignant_vs_benign'], 'specificity')}",
            f"  melanoma vs nevus at the operating point: sensitivity {ci(m['melanoma_vs_nevus'], 'sensitivity')}, "
            f"specificity {ci(m['melanoma_vs_nevus'], 'specificity')}",
        ]
    else:
        lines.append(f"HAM10000 not found at {ham}: skipped")

    ph2 = args.data_root / "ph2"
    if ph2.is_dir():
        records = load_records(ph2)
        m = evaluate_model(model, records, num_workers=args.workers, tta=args.tta, n_boot=args.boot).metrics
        figures["ph2"] = m
        mn = m["melanoma_vs_nevus"]
        lines += [
            f"PH2 external set ({len(records)} images: {mn['n_positive']} melanoma, {mn['n_negative']} nevi)",
            f"  melanoma vs nevus AUC {ci(mn, 'auc')}",
            f"  at the operating point: sensitivity {ci(mn, 'sensitivity')}, specificity {ci(mn, 'specificity')}",
        ]
    else:
        lines.append(f"PH2 not found at {ph2}: skipped")

    sd = args.data_root / "sd198_clinical"
    if sd.is_dir():
        records = load_records(sd)
        e = evaluate_model(model, records, num_workers=args.workers, tta=args.tta, n_boot=args.boot)
        m = e.metrics
        figures["sd198_clinical"] = m
        node_ids = list(taxonomy)
        p_mal = e.node_probs[:, node_ids.index("malignant")]
        p_nonneo = e.node_probs[:, node_ids.index("non_neoplastic")]
        threshold = m["malignant_vs_benign"]["threshold"] if "malignant_vs_benign" in m else 0.5
        top = [taxonomy.ancestor_at_level(n, 1) for n in e.truth]
        referred = Counter(t for t, p in zip(top, p_mal) if p >= threshold)
        totals = Counter(top)
        figures["sd198_clinical_referral"] = {t: {"referred": referred[t], "total": totals[t]} for t in totals}
        lines += [
            f"SD-198 clinical photographs ({len(records)} images; {totals['non_neoplastic']} of them non-neoplastic)",
            f"  malignant vs benign AUC (neoplastic images only) {ci(m['malignant_vs_benign'], 'auc')}"
            if "malignant_vs_benign" in m else "  malignant vs benign: not computable",
            f"  melanoma vs nevus AUC {ci(m['melanoma_vs_nevus'], 'auc')}" if "melanoma_vs_nevus" in m else "",
            "  referred at the operating point: " + ", ".join(f"{t} {referred[t]}/{totals[t]}" for t in sorted(totals)),
            f"  mean P(non_neoplastic) on non-neoplastic images: {float(np.mean(p_nonneo[np.array(top) == 'non_neoplastic'])):.3f}"
            " (the model has no non-neoplastic training classes, so this is ~0 by construction)",
        ]
    else:
        lines.append(f"SD-198 not found at {sd}: skipped")

    lines.append(f"({time.time() - started:.0f} s, tta={args.tta}, model {model})")
    text = "\n".join(line for line in lines if line)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model_card_figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    (args.out / "model_card_figures.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
