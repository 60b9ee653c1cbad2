"""What recipe choices buy on HAM10000 `val` (never `test`): the figures behind MODEL_CARD.md's "Recipe" table.

    python benchmarks/recipe_choices.py --model src/dermlens/weights [--data ../shared/data/ham10000]

1. A frozen ImageNet backbone with a trained linear head (the cheap baseline): logistic regression on pre-logit
   features, without and with class-balanced weights.
2. The fine-tuned model's per-epoch validation curve (from its config's training history).
3. The fine-tuned model with test-time augmentation of 1, 2, 4 and 8 dihedral views.
4. The fine-tuned model at other input sizes than it was trained at (how sensitive it is to resolution).
Figures are 7-class balanced accuracy (mean recall over HAM10000's classes) and melanoma-vs-nevus AUC.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader

from dermlens.data.datasets import load_records
from dermlens.data.torch_dataset import RecordDataset
from dermlens.data.transforms import build_eval_transform
from dermlens.evaluate.classification import evaluate_node_probabilities
from dermlens.models import create_backbone
from dermlens.models.features import extract_features
from dermlens.predict import Predictor


def figures(predictor: Predictor, records, tta: int = 1) -> tuple[float, float]:
    predictor.tta = tta
    probs = predictor.node_probabilities(predictor.predict_records(records, progress=False))
    m = evaluate_node_probabilities(
        probs, predictor.node_ids, [r.node for r in records], predictor.taxonomy, n_boot=0,
        class_nodes=predictor.config.class_nodes,
    )
    return m["dataset_classes"]["balanced_accuracy"], m["melanoma_vs_nevus"]["auc"]


def frozen_baseline(train, val, size: int) -> list[tuple[str, float, float]]:
    model, pre = create_backbone("efficientnet_lite0", num_classes=7, pretrained=True)
    model = model.to(memory_format=torch.channels_last).eval()
    pre = replace(pre, size=size)
    transform = build_eval_transform(pre)

    def feats(records):
        loader = DataLoader(RecordDataset(records, transform), batch_size=64, num_workers=2)
        return extract_features(model, loader).numpy()

    x_train, x_val = feats(train), feats(val)
    scaler = StandardScaler().fit(x_train)
    x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)
    y_train, y_val = [r.node for r in train], np.array([r.node for r in val])
    rows = []
    for weighting in (None, "balanced"):
        head = LogisticRegression(max_iter=2000, C=0.1, class_weight=weighting).fit(x_train, y_train)
        probs = head.predict_proba(x_val)
        classes = list(head.classes_)
        bacc = balanced_accuracy_score(y_val, np.array(classes)[probs.argmax(1)])
        keep = np.isin(y_val, ["melanoma", "melanocytic_nevus"])
        auc = roc_auc_score(y_val[keep] == "melanoma", probs[keep, classes.index("melanoma")])
        rows.append((f"frozen ImageNet Lite0 + logistic head, class_weight={weighting}", bacc, auc))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ham10000")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    started = time.time()
    records = load_records(args.data)
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split == "val"]
    predictor = Predictor(args.model)
    size = predictor.config.preprocessing.size
    rows: list[tuple[str, float, float]] = []
    if not args.skip_baseline:
        rows += frozen_baseline(train, val, size)
    for tta in (1, 2, 4, 8):
        bacc, auc = figures(predictor, val, tta)
        rows.append((f"fine-tuned, {size}px, TTA {tta}", bacc, auc))
    for other in (size - 32, size + 32):
        p = Predictor(args.model)
        p.transform = build_eval_transform(replace(p.config.preprocessing, size=other))
        bacc, auc = figures(p, val)
        rows.append((f"fine-tuned, evaluated at {other}px", bacc, auc))
    print(f"HAM10000 val ({len(val)} images): 7-class balanced accuracy, melanoma-vs-nevus AUC")
    for name, bacc, auc in rows:
        print(f"  {name:<62} {bacc:.3f}   {auc:.3f}")
    history = predictor.config.training.get("history", [])
    if history:
        print("per-epoch validation balanced accuracy over training classes (fine-tuning):")
        print("  " + ", ".join(f"{h['epoch']}: {h['val_balanced_accuracy']:.3f}" for h in history))
    print(f"({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
