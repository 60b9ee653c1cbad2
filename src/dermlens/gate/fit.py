"""Fit a model's gate on data and choose its thresholds: ``dermlens gate fit --model DIR``.

    real skin (fit part of every dataset) ─┬─ half A: the skin head's positives, the out-of-distribution model
                                           └─ half B: held out to set thresholds so that each dataset loses at
                                              most its budget of good photos
    non-skin (fit part: other source photos than the test part) ── the skin head's negatives

Quality thresholds are quantiles of the measures of good photos (the worst of the datasets), clamped to what
counts as clearly poor (never lenient enough to pass a lesion clipped on over half its area).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dermlens.gate.data import Photo, load_skin, non_skin_photos, skin_records
from dermlens.gate.gate import Gate, GateThresholds, OodModel
from dermlens.gate.quality import QualityThresholds, measure, unnormalise
from dermlens.models.embedding_head import EmbeddingHead

DEFAULT_DATA_ROOT = Path("../shared/data")
DATASETS = ("ham10000", "isic2017", "ph2", "dermnet", "sd198_clinical")
# Good photos each check may stop, per dataset, on the held-out half; together under the 2% target. The skin check
# gets the largest share because it buys the most: leaving each non-skin source of the fit set out in turn, a skin
# budget of 0.3% stopped 82% of the left-out source's pictures, 1% stopped 85% and 2% stopped 88%, while the worst
# dataset's held-out skin photos stopped stayed at 1.2% up to 1% (2.3% at 2%). Chosen on fit data only.
STOP_BUDGET = {"quality": 0.003, "skin": 0.01, "ood": 0.005}


def default_data_dirs(root: str | Path = DEFAULT_DATA_ROOT) -> list[Path]:
    return [Path(root) / d for d in DATASETS if (Path(root) / d / "labels.csv").is_file()]


@torch.inference_mode()
def analyse_photos(predictor, photos: Sequence[Photo], batch_size: int = 32, progress: bool = True):
    """(embeddings (n, d), class probabilities (n, classes), quality measures): one network pass per photo."""
    from tqdm.auto import tqdm

    from dermlens.models.features import classifier_layer, pre_logits

    classifier = classifier_layer(predictor.model)
    pre = predictor.config.preprocessing
    embeddings, probs, measures = [], [], []
    with tqdm(total=len(photos), desc="gate: embed", unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, len(photos), batch_size):
            chunk = photos[start: start + batch_size]
            batch = torch.stack([predictor.transform(p.image.convert("RGB")) for p in chunk])
            features = pre_logits(predictor.model, batch)
            embeddings.append(features)
            probs.append(torch.softmax(classifier(features), 1).double())
            measures += measure(unnormalise(batch, pre.mean, pre.std), [min(p.image.size) for p in chunk])
            bar.update(len(chunk))
    return torch.cat(embeddings), torch.cat(probs).numpy(), measures


def _halves(n: int, seed: int) -> np.ndarray:
    """True for half A (fitting), False for half B (thresholds), about 60/40."""
    return np.random.default_rng(seed).random(n) < 0.6


@dataclass
class FitSet:
    """What the gate is fitted on, analysed once: real skin (embeddings, measures, dataset) and non-skin."""

    skin_embeddings: torch.Tensor
    skin_measures: list
    datasets: np.ndarray
    other_embeddings: torch.Tensor
    data_dirs: list
    per_dataset: int
    seed: int


def embed_fit_set(predictor, data_dirs: Sequence[str | Path], *, per_dataset: int = 200, seed: int = 0,
                  progress: bool = True) -> FitSet:
    data_dirs = [Path(d) for d in data_dirs]
    if not data_dirs:
        raise ValueError("no datasets to fit the gate on; pass --data FOLDER (a labels.csv layout) at least once")
    skin = load_skin(skin_records(data_dirs, "fit", per_dataset, seed))
    others = non_skin_photos("fit")
    skin_emb, _, skin_measures = analyse_photos(predictor, skin, progress=progress)
    other_emb, _, _ = analyse_photos(predictor, others, progress=progress)
    return FitSet(skin_emb, skin_measures, np.array([p.kind for p in skin]), other_emb, data_dirs, per_dataset, seed)


def fit_gate(predictor, data_dirs: Sequence[str | Path], *, per_dataset: int = 200, seed: int = 0,
             progress: bool = True) -> tuple[Gate, dict]:
    """Fit the skin head and the out-of-distribution model, choose every threshold; returns (gate, report)."""
    started = time.perf_counter()
    gate = fit_on(embed_fit_set(predictor, data_dirs, per_dataset=per_dataset, seed=seed, progress=progress))
    gate.info["fit_seconds"] = round(time.perf_counter() - started, 1)
    return gate, gate.info


def fit_on(fit: FitSet) -> Gate:
    skin_emb, skin_measures, datasets, other_emb = fit.skin_embeddings, fit.skin_measures, fit.datasets, fit.other_embeddings
    in_a = _halves(len(datasets), fit.seed)

    # The skin head: real skin (half A) against non-skin pictures, balanced.
    x = torch.cat([skin_emb[torch.from_numpy(in_a)], other_emb]).numpy().astype(np.float64)
    y = np.r_[np.ones(int(in_a.sum())), np.zeros(len(other_emb))]
    skin_head = EmbeddingHead(C=0.05, max_iter=3000, class_weight="balanced").fit(x, y)
    ood = OodModel.fit(skin_emb[torch.from_numpy(in_a)].numpy().astype(np.float64))

    held = ~in_a
    p_skin = skin_head.probability(skin_emb)
    distance = ood.distance(skin_emb)
    names = sorted(set(datasets))
    # Each threshold stops at most its budget of every dataset's held-out good photos: take the worst dataset.
    min_p_skin = min(0.5, min(float(np.quantile(p_skin[held & (datasets == d)], STOP_BUDGET["skin"])) for d in names if (held & (datasets == d)).any()))
    max_ood = max(float(np.quantile(distance[held & (datasets == d)], 1 - STOP_BUDGET["ood"])) for d in names if (held & (datasets == d)).any())

    focus = np.array([m.focus for m in skin_measures])
    over = np.array([m.overexposed for m in skin_measures])
    under = np.array([m.underexposed for m in skin_measures])
    q = STOP_BUDGET["quality"]
    per = {d: datasets == d for d in names}
    quality = QualityThresholds(
        min_focus=min(float(np.quantile(focus[m], q)) for m in per.values()),
        # clipped shares: never stricter than a quarter of the centre, never more lenient than half of it
        max_overexposed=float(np.clip(max(np.quantile(over[m], 1 - q) for m in per.values()), 0.25, 0.5)),
        max_underexposed=float(np.clip(max(np.quantile(under[m], 1 - q) for m in per.values()), 0.25, 0.5)),
        min_contrast=QualityThresholds().min_contrast,
        min_brightness=float(min(QualityThresholds().min_brightness,
                                 0.8 * min(np.quantile([m.brightness for m in np.array(skin_measures)[mask]], q) for mask in per.values()))),
        min_resolution=float(min(QualityThresholds().min_resolution, 0.8 * min(m.resolution for m in skin_measures))),
    )
    thresholds = GateThresholds(quality, min_p_skin, max_ood)
    gate = Gate(thresholds, skin_head, ood)
    stops = {}
    held_gate = [v for v, h in zip(gate.decide(skin_measures, skin_emb), held) if h]
    held_sets = datasets[held]
    for d in names:
        mine = [v for v, s in zip(held_gate, held_sets) if s == d]
        stops[d] = {"held_out": len(mine), "stopped": sum(v.stopped for v in mine)}
    other_p = skin_head.probability(other_emb)
    gate.info = {
        "fitted_on": {
            "skin": {d: int((datasets == d).sum()) for d in names}, "non_skin": len(other_emb),
            "data": [str(d) for d in fit.data_dirs], "per_dataset": fit.per_dataset, "seed": fit.seed,
        },
        "held_out_skin_stopped": stops,
        "non_skin_fit_below_p_skin": float((other_p < min_p_skin).mean()),
    }
    return gate


__all__ = ["DATASETS", "FitSet", "analyse_photos", "default_data_dirs", "embed_fit_set", "fit_gate", "fit_on"]
