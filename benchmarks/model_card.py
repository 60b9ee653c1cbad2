"""Figures for MODEL_CARD.md: a model on every labelled set in ../shared/data, with 95% bootstrap CIs.

    python benchmarks/model_card.py [--model DIR] [--taxonomy TREE.yaml] [--tta 1] [--out runs/model-card]

    HAM10000 test        7-class balanced accuracy, melanoma vs nevus AUC (CIs resampled by lesion)
    ISIC 2017 val        the challenge's metrics: melanoma AUC, seborrheic keratosis AUC, their mean
    PH2 (external)       melanoma vs nevus AUC
    DermNet test         3-way and 9-way accuracy, malignant vs benign and vs non-neoplastic AUCs, the triage of rashes
    SD-198 (external)    3-way accuracy, malignant vs non-neoplastic AUC, the share of non-neoplastic photos referred
                         and answered non_neoplastic, the share of malignant photos referred
    every set            how often the modality recogniser names the photo's modality

Triage uses each photo's own modality (as the dataset states it) unless ``--modality auto``. Nothing is tuned on these
figures: operating points were chosen on the pooled validation sets at training time. ``--taxonomy`` loads a model
trained on an older tree (the previous bundled model: ``git show 9fc30f7:src/dermlens/taxonomy/tree.yaml``); it is
scored in today's tree, where each of its class nodes still stands for the same diseases.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from dermlens.data.datasets import load_records
from dermlens.evaluate.bootstrap import bootstrap_ci
from dermlens.predict import Predictor, bundled_model_dir
from dermlens.taxonomy import default_taxonomy, tree_sum_matrix
from dermlens.taxonomy.tree import Taxonomy
from dermlens.taxonomy.triage import NON_NEOPLASTIC, REFER

DATA_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def with_ci(metric, arrays, groups=None, n_boot=1000) -> dict:
    value = float(metric(*arrays))
    low, high = bootstrap_ci(metric, arrays, n=n_boot, groups=groups)
    return {"value": value, "ci95": [low, high], "n": int(len(arrays[0]))}


def fmt(m: dict) -> str:
    return f"{m['value']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"


def auc(y, s) -> float:
    return roc_auc_score(y, s)


def accuracy(y, p) -> float:
    return float(np.mean(y == p))


def balanced_accuracy(y, p) -> float:
    return float(np.mean([np.mean(p[y == c] == c) for c in np.unique(y)]))


class Scored:
    """One dataset's node probabilities, truth and modality calls."""

    def __init__(self, predictor: Predictor, records, modality: str, workers: int):
        # Scored in today's tree, whatever tree the model was trained on: its class nodes exist in both.
        self.records = records
        self.taxonomy = default_taxonomy()
        self.node_ids = list(self.taxonomy)
        self.class_probs = predictor.predict_records(records, num_workers=workers, progress=False)
        self.node_probs = self.class_probs @ tree_sum_matrix(self.taxonomy, predictor.config.classes).T
        self.truth = [r.node for r in records]
        self.groups = [r.group for r in records]
        self.recognised = recognised_modalities(predictor, records, workers)
        use = self.recognised if modality == "auto" else [r.modality for r in records]
        ops = [predictor.config.operating_point_for(m) for m in use]
        self.triage = np.array([op.triage(self.p(op.node)[i], self.p("non_neoplastic")[i]) for i, op in enumerate(ops)])
        self.referred = self.triage == REFER

    def p(self, node: str) -> np.ndarray:
        return self.node_probs[:, self.node_ids.index(node)]

    def level(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        """(truth, predicted) indices among the nodes of a taxonomy level (1: 3-way, 2: 9-way)."""
        nodes = self.taxonomy.level_nodes(level)
        truth = np.array([nodes.index(self.taxonomy.ancestor_at_level(n, level)) for n in self.truth])
        predicted = self.node_probs[:, [self.node_ids.index(n) for n in nodes]].argmax(1)
        return truth, predicted

    def under(self, node: str) -> np.ndarray:
        return np.array([node in self.taxonomy.ancestors(n) or n == node for n in self.truth])


def recognised_modalities(predictor: Predictor, records, workers: int) -> list[str]:
    if predictor.modality_recogniser is None:
        return [""] * len(records)
    import torch
    from torch.utils.data import DataLoader

    from dermlens.data.torch_dataset import RecordDataset

    out: list[str] = []
    loader = DataLoader(RecordDataset(records, predictor.transform), batch_size=64, num_workers=workers)
    with torch.inference_mode():
        for images, _ in loader:
            out += predictor.modalities(images, None)[0]
    return out


def modality_line(s: Scored) -> tuple[str, dict | None]:
    if not any(s.recognised):
        return "  modality recogniser: none in this model", None
    truth = np.array([r.modality for r in s.records])
    m = with_ci(accuracy, [truth, np.array(s.recognised)])
    return f"  modality recognised correctly            {fmt(m)}", m


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--taxonomy", type=Path, default=None, help="The tree the model was trained on, if older.")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--tta", type=int, default=1)
    parser.add_argument("--modality", default="given", choices=["given", "auto"])
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/model-card"))
    args = parser.parse_args(argv)
    model = args.model or bundled_model_dir()
    taxonomy = Taxonomy.load(args.taxonomy) if args.taxonomy else default_taxonomy()
    predictor = Predictor(model, taxonomy=taxonomy, tta=args.tta)
    figures: dict = {"model": str(model), "tta": args.tta, "modality": args.modality}
    lines: list[str] = [f"model {model} (tta {args.tta}, triage by {args.modality} modality)"]
    started = time.time()
    root = args.data_root

    def load(name, split=None):
        folder = root / name
        if not folder.is_dir():
            lines.append(f"{name}: not found at {folder}; skipped")
            return None
        records = [r for r in load_records(folder) if split is None or r.split == split]
        return Scored(predictor, records, args.modality, args.workers)

    def record(key: str, title: str, s: Scored, metrics: dict[str, dict]):
        figures[key] = metrics
        lines.append(title)
        for name, m in metrics.items():
            if m is not None and "value" in m:
                lines.append(f"  {name:<40} {fmt(m)}")
        line, mod = modality_line(s)
        lines.append(line)
        figures[key]["modality_recognised"] = mod

    if (s := load("ham10000", "test")) is not None:
        classes = sorted(set(s.truth))
        truth = np.array([classes.index(n) for n in s.truth])
        predicted = s.node_probs[:, [s.node_ids.index(c) for c in classes]].argmax(1)
        g = s.groups
        mel, nev = s.under("melanoma"), s.under("melanocytic_nevus")
        keep = mel | nev
        record("ham10000_test", f"HAM10000 test ({len(truth)} images; CIs resampled by lesion)", s, {
            "7-class balanced accuracy": with_ci(balanced_accuracy, [truth, predicted], g, args.boot),
            "melanoma vs nevus AUC": with_ci(auc, [mel[keep], s.p("melanoma")[keep]], np.array(g)[keep], args.boot),
            "malignant vs benign AUC": with_ci(auc, [s.under("malignant"), s.p("malignant")], g, args.boot),
        })

    if (s := load("isic2017", "val")) is not None:
        mel, sk = s.under("melanoma"), s.under("seborrheic_keratosis")
        # The challenge scores SK vs the rest; P(benign keratosis) holds HAM10000's unsplit "bkl" SKs as well.
        ms = with_ci(auc, [mel, s.p("melanoma")], None, args.boot)
        ks = with_ci(auc, [sk, s.p("benign_keratosis")], None, args.boot)
        mean = with_ci(lambda a, b, c, d: (auc(a, b) + auc(c, d)) / 2,
                       [mel, s.p("melanoma"), sk, s.p("benign_keratosis")], None, args.boot)
        record("isic2017_val", f"ISIC 2017 val ({len(mel)} images: {mel.sum()} melanoma, {sk.sum()} SK)", s, {
            "melanoma AUC": ms, "seborrheic keratosis AUC": ks, "mean of the two": mean,
        })

    if (s := load("ph2")) is not None:
        mel = s.under("melanoma")
        record("ph2", f"PH2, never trained on ({len(mel)} images: {mel.sum()} melanoma)", s, {
            "melanoma vs nevus AUC": with_ci(auc, [mel, s.p("melanoma")], None, args.boot),
            "melanomas referred (sensitivity)": with_ci(np.mean, [s.referred[mel]], None, args.boot),
            "nevi reassured (specificity)": with_ci(np.mean, [~s.referred[~mel]], None, args.boot),
        })

    if (s := load("dermnet", "test")) is not None:
        t3, p3 = s.level(1)
        t9, p9 = s.level(2)
        neo = ~s.under("non_neoplastic")
        record("dermnet_test", f"DermNet test ({len(t3)} clinical photos; {neo.sum()} neoplastic)", s, {
            "3-way accuracy": with_ci(accuracy, [t3, p3], None, args.boot),
            "9-way accuracy": with_ci(accuracy, [t9, p9], None, args.boot),
            "malignant vs benign AUC": with_ci(auc, [s.under("malignant")[neo], s.p("malignant")[neo]], None, args.boot),
            "non-neoplastic referred": with_ci(np.mean, [s.referred[~neo]], None, args.boot),
            "non-neoplastic answered non_neoplastic": with_ci(np.mean, [s.triage[~neo] == NON_NEOPLASTIC], None, args.boot),
            "malignant referred (sensitivity)": with_ci(np.mean, [s.referred[s.under("malignant")]], None, args.boot),
            "malignant vs non-neoplastic AUC": with_ci(auc, [s.under("malignant")[~neo | s.under("malignant")],
                                                             s.p("malignant")[~neo | s.under("malignant")]], None, args.boot),
        })

    if (s := load("sd198_clinical")) is not None:
        t3, p3 = s.level(1)
        nonneo = s.under("non_neoplastic")
        mal = s.under("malignant")
        record("sd198_clinical", f"SD-198 clinical, never trained on ({len(t3)} photos; {nonneo.sum()} non-neoplastic)", s, {
            "3-way accuracy": with_ci(accuracy, [t3, p3], None, args.boot),
            "non-neoplastic referred": with_ci(np.mean, [s.referred[nonneo]], None, args.boot),
            "non-neoplastic answered non_neoplastic": with_ci(np.mean, [s.triage[nonneo] == NON_NEOPLASTIC], None, args.boot),
            "malignant referred (sensitivity)": with_ci(np.mean, [s.referred[mal]], None, args.boot),
            "malignant vs non-neoplastic AUC": with_ci(auc, [mal[mal | nonneo], s.p("malignant")[mal | nonneo]], None, args.boot),
            "malignant vs rest AUC": with_ci(auc, [mal, s.p("malignant")], None, args.boot),
        })

    lines.append(f"({time.time() - started:.0f} s)")
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model_card_figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    (args.out / "model_card_figures.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
