"""Fit a model's gate on data and choose its thresholds: ``dermlens gate fit --model DIR``.

    real skin, training split of each fit dataset ── the skin head's positives, the out-of-distribution model,
                                                     the wide-field head's negatives
    real skin, validation split (or 40% of the training photos where there is none: ISIC 2017)
                                                  ── held out to set thresholds so that each dataset loses at most
                                                     its budget of good photos (photos the classifier never trained
                                                     on: its own training photos look more like skin than new ones)
    non-skin (everyday photos and crops of them, scikit-image's fit sources, generated pictures)
                                                    ── the skin head's negatives, the wide-field head's negatives
    wide-field skin (generated patients, whole and cropped)   ── the wide-field head's positives

PH2 and SD-198 are external test sets: never fitted on. The method (which features the heads read, how much of
the good photos each check may stop) was chosen by leaving whole groups of ImageNet classes out of the non-skin
photos (``benchmarks/gate.py``). Quality thresholds are quantiles of the measures of good photos (the worst of
the datasets), clamped to what counts as clearly poor (never lenient enough to pass a lesion clipped on over half
its area).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from dermlens.gate.appearance import appearance_features
from dermlens.gate.data import Photo, everyday_photos, load_skin, non_skin_photos, skin_records, wide_field_photos
from dermlens.gate.gate import Gate, GateThresholds, OodModel
from dermlens.gate.quality import QualityThresholds, downscaled, measure, unnormalise
from dermlens.models.embedding_head import EmbeddingHead

DEFAULT_DATA_ROOT = Path("../shared/data")
FIT_DATASETS = ("ham10000", "isic2017", "dermnet", "pad_ufes")
EXTERNAL_DATASETS = ("ph2", "sd198_clinical")  # measured on, never fitted on nor used for a choice
EVERYDAY_FOLDER = "nonskin"


@dataclass(frozen=True)
class FitOptions:
    """How the gate is fitted. ``budget``: the share of every dataset's held-out good photos each check may stop.

    Chosen by leave-classes-out validation on the everyday photos (whole WordNet groups of ImageNet classes held
    out) and the validation splits, never the test parts (measured on the bundled model; benchmarks/gate.py):
    a logistic head on the embedding alone, C = 0.01 (0.002: 93.9% of left-out kinds stopped by the head alone;
    0.01: 94.7%; 0.05: 94.1%; 0.5: 93.9%; on L2-normalised embeddings 94.1%); the appearance statistics bought
    0.2 points and cost more than the rest of the gate, so they are off. The out-of-distribution distance stopped
    one everyday photo the skin head let through, so it keeps the furthest held-out photo as its threshold (budget
    0), and so does the wide-field head. Skin budget: 1% stopped 95.7% of left-out kinds, 0.5% stopped 92.0%;
    1% is the largest that keeps every dataset's validation photos within the 1.5% target with the other checks.
    """

    appearance: bool = False  # the heads read the embedding followed by gate.appearance's statistics
    strength: float = 0.01  # inverse L2 strength (scikit-learn's C) of the logistic heads, on standardised inputs
    budget: dict = field(default_factory=lambda: {"quality": 0.002, "skin": 0.01, "ood": 0.0, "wide": 0.0})


def default_data_dirs(root: str | Path = DEFAULT_DATA_ROOT, names: Sequence[str] = FIT_DATASETS) -> list[Path]:
    return [Path(root) / d for d in names if (Path(root) / d / "labels.csv").is_file()]


@dataclass
class Analysis:
    """What the gate reads of each photo: embedding, appearance statistics, quality measures (and class
    probabilities for the benchmark's AUC)."""

    embeddings: torch.Tensor
    appearance: torch.Tensor
    measures: list
    probabilities: np.ndarray

    def subset(self, keep: np.ndarray) -> "Analysis":
        idx = np.flatnonzero(keep)
        return Analysis(self.embeddings[idx], self.appearance[idx], [self.measures[i] for i in idx], self.probabilities[idx])


@torch.inference_mode()
def analyse_photos(predictor, photos: Sequence[Photo], batch_size: int = 32, progress: bool = True,
                   desc: str = "gate: embed") -> Analysis:
    """One network pass per photo (the predictor's engine), and the gate's measures as ``Predictor`` takes them."""
    from tqdm.auto import tqdm

    from dermlens.models.features import classifier_layer, pre_logits

    pre = predictor.config.preprocessing
    embeddings, probs, appearance, measures = [], [], [], []
    with tqdm(total=len(photos), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, len(photos), batch_size):
            chunk = photos[start: start + batch_size]
            batch = torch.stack([predictor.transform(p.image.convert("RGB")) for p in chunk])
            if predictor.engine.exact:
                p, features = predictor.engine.probabilities_and_embeddings(batch)
            else:
                features = pre_logits(predictor.model, batch)
                p = torch.softmax(classifier_layer(predictor.model)(features), 1)
            embeddings.append(torch.as_tensor(features).float())
            probs.append(torch.as_tensor(p).double())
            small = unnormalise(downscaled(batch), pre.mean, pre.std)
            measures += measure(small, [min(p.image.size) for p in chunk], None, min(batch.shape[-2:]))
            appearance.append(appearance_features(small))
            bar.update(len(chunk))
    return Analysis(torch.cat(embeddings), torch.cat(appearance), measures, torch.cat(probs).numpy())


def _halves(n: int, seed: int) -> np.ndarray:
    """True for half A (fitting), False for half B (thresholds), about 60/40."""
    return np.random.default_rng(seed).random(n) < 0.6


@dataclass
class FitSet:
    """What the gate is fitted on, analysed once: real skin (with its dataset), non-skin (with a label: the
    ImageNet wnid of an everyday photo, else its source) and wide-field skin."""

    skin: Analysis
    datasets: np.ndarray
    others: Analysis
    other_labels: np.ndarray
    wide: Analysis | None = None
    about: dict = field(default_factory=dict)
    held: np.ndarray | None = None  # skin photos that set the thresholds (None: 40% of them, drawn by seed)

    def without(self, labels) -> "FitSet":
        """The same with the non-skin photos of ``labels`` left out (leave-classes-out validation)."""
        keep = ~np.isin(self.other_labels, list(labels))
        return replace(self, others=self.others.subset(keep), other_labels=self.other_labels[keep])


def embed_fit_set(predictor, data_dirs: Sequence[str | Path], *, everyday: str | Path | None = None,
                  wide_field: str | Path | None = None, per_dataset: int = 400, seed: int = 0,
                  progress: bool = True) -> FitSet:
    data_dirs = [Path(d) for d in data_dirs]
    if not data_dirs:
        raise ValueError("no datasets to fit the gate on; pass --data FOLDER (a labels.csv layout) at least once")
    fit_part, threshold_part = (skin_records(data_dirs, part, per_dataset, seed) for part in ("fit", "threshold"))
    skin = load_skin(fit_part + threshold_part)
    # thresholds: the validation split where a dataset has one, else 40% of its training photos
    own = {name for name, _ in threshold_part}
    held = np.r_[[name not in own and not a for (name, _), a in zip(fit_part, _halves(len(fit_part), seed))],
                 np.ones(len(threshold_part), bool)].astype(bool)
    others = non_skin_photos("fit") + (everyday_photos(everyday, seed=seed) if everyday else [])
    wide = wide_field_photos(wide_field, seed=seed) if wide_field else []
    analysed_wide = analyse_photos(predictor, wide, progress=progress, desc="gate: wide-field") if wide else None
    return FitSet(analyse_photos(predictor, skin, progress=progress, desc="gate: skin"), np.array([p.kind for p in skin]),
                  analyse_photos(predictor, others, progress=progress, desc="gate: not skin"),
                  np.array([p.label or p.kind for p in others]), analysed_wide,
                  {"data": [str(d) for d in data_dirs], "everyday": str(everyday or ""), "wide_field": str(wide_field or ""),
                   "per_dataset": per_dataset, "seed": seed}, held)


def fit_gate(predictor, data_dirs: Sequence[str | Path], *, everyday: str | Path | None = None,
             wide_field: str | Path | None = None, per_dataset: int = 400, seed: int = 0,
             options: FitOptions | None = None, progress: bool = True) -> tuple[Gate, dict]:
    """Fit the heads and the out-of-distribution model, choose every threshold; returns (gate, report)."""
    started = time.perf_counter()
    fit = embed_fit_set(predictor, data_dirs, everyday=everyday, wide_field=wide_field, per_dataset=per_dataset,
                        seed=seed, progress=progress)
    gate = fit_on(fit, options)
    gate.info["fit_seconds"] = round(time.perf_counter() - started, 1)
    return gate, gate.info


def _logistic(positives: np.ndarray, negatives: np.ndarray, strength: float) -> EmbeddingHead:
    x = np.r_[positives, negatives].astype(np.float64)
    y = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    return EmbeddingHead(C=strength, max_iter=3000, class_weight="balanced").fit(x, y)


def _worst(values: np.ndarray, held: np.ndarray, datasets: np.ndarray, share: float, low: bool) -> float:
    """The threshold that stops at most ``share`` of every dataset's held-out photos (the worst dataset's)."""
    names = [d for d in sorted(set(datasets)) if (held & (datasets == d)).any()]
    cuts = [float(np.quantile(values[held & (datasets == d)], share if low else 1 - share)) for d in names]
    return min(cuts) if low else max(cuts)


def fit_on(fit: FitSet, options: FitOptions | None = None) -> Gate:
    options = options or FitOptions()
    budget = options.budget
    datasets = fit.datasets
    held = fit.held if fit.held is not None else ~_halves(len(datasets), int(fit.about.get("seed", 0)))
    in_a = ~held
    probe = Gate(appearance=options.appearance)
    skin_x = probe.features(fit.skin.embeddings, fit.skin.appearance).numpy()
    other_x = probe.features(fit.others.embeddings, fit.others.appearance).numpy()

    skin_head = _logistic(skin_x[in_a], other_x, options.strength)
    ood = OodModel.fit(fit.skin.embeddings[torch.from_numpy(in_a)].numpy().astype(np.float64))
    min_p_skin = min(0.5, _worst(skin_head.probability(skin_x), held, datasets, budget["skin"], low=True))
    max_ood = _worst(ood.distance(fit.skin.embeddings), held, datasets, budget["ood"], low=False)
    wide_head, min_p_wide = None, None
    if fit.wide is not None and len(fit.wide.measures):
        wide_x = probe.features(fit.wide.embeddings, fit.wide.appearance).numpy()
        wide_head = _logistic(wide_x, np.r_[skin_x[in_a], other_x], options.strength)
        min_p_wide = max(0.5, _worst(wide_head.probability(skin_x), held, datasets, budget["wide"], low=False))

    m = fit.skin.measures
    focus, over, under = (np.array([getattr(x, k) for x in m]) for k in ("focus", "overexposed", "underexposed"))
    brightness = np.array([x.brightness for x in m])
    q = budget["quality"]
    per = [datasets == d for d in sorted(set(datasets))]
    defaults = QualityThresholds()
    quality = QualityThresholds(
        min_focus=min(float(np.quantile(focus[mask], q)) for mask in per),
        # clipped shares: never stricter than a quarter of the centre, never more lenient than half of it
        max_overexposed=float(np.clip(max(np.quantile(over[mask], 1 - q) for mask in per), 0.25, 0.5)),
        max_underexposed=float(np.clip(max(np.quantile(under[mask], 1 - q) for mask in per), 0.25, 0.5)),
        min_contrast=defaults.min_contrast,
        min_brightness=float(min(defaults.min_brightness, 0.8 * min(np.quantile(brightness[mask], q) for mask in per))),
        min_resolution=float(min(defaults.min_resolution, 0.8 * min(x.resolution for x in m))),
    )
    gate = Gate(GateThresholds(quality, min_p_skin, max_ood, min_p_wide), skin_head, ood, wide_head=wide_head,
                appearance=options.appearance)
    verdicts = gate.decide(m, fit.skin.embeddings, fit.skin.appearance)
    stops = {d: {"held_out": int((held & (datasets == d)).sum()),
                 "stopped": int(sum(v.stopped for v, h, s in zip(verdicts, held, datasets) if h and s == d))}
             for d in sorted(set(datasets))}
    gate.info = {
        "fitted_on": {"skin": {d: int((datasets == d).sum()) for d in sorted(set(datasets))},
                      "non_skin": len(fit.other_labels), "wide_field_photos": 0 if fit.wide is None else len(fit.wide.measures),
                      **fit.about},
        "options": {"appearance": options.appearance, "strength": options.strength, "budget": dict(budget)},
        "held_out_skin_stopped": stops,
    }
    return gate


__all__ = ["Analysis", "EXTERNAL_DATASETS", "FIT_DATASETS", "FitOptions", "FitSet", "analyse_photos",
           "default_data_dirs", "embed_fit_set", "fit_gate", "fit_on"]
