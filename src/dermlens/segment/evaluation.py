"""Segmentation benchmark on a dataset with masks: mean Jaccard and ISIC thresholded Jaccard, with 95% bootstrap
intervals over images (``dermlens segment evaluate``; ``benchmarks/segmentation.py`` runs HAM10000 test and PH2)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dermlens.evaluate.bootstrap import bootstrap_ci
from dermlens.segment.metrics import thresholded_jaccard
from dermlens.segment.pairs import load_pairs
from dermlens.segment.segmenter import Segmenter
from dermlens.segment.training import evaluate_segmenter


def evaluate_dataset(data: str | Path, model_dir: str | Path | None = None, split: str | None = None,
                     tta: bool = True, progress: bool = True) -> dict:
    pairs = load_pairs(data, split)
    segmenter = Segmenter(model_dir, tta=tta)
    metrics = evaluate_segmenter(segmenter, pairs, progress=progress)
    scores = np.array([row["jaccard"] for row in metrics["per_image"]])
    metrics["mean_jaccard_ci95"] = list(bootstrap_ci(np.mean, [scores]))
    metrics["thresholded_jaccard_ci95"] = list(bootstrap_ci(thresholded_jaccard, [scores]))
    metrics.update(data=str(data), split=split, model=str(model_dir or "bundled"), tta=tta)
    return metrics
