"""The ugly-duckling score: how unlike a lesion is to the rest of the same patient's lesions.

Dermatologists look for the mole that does not fit the patient's pattern (Grob & Bonerandi 1998); Soenksen et al.
(Sci. Transl. Med. 2021) made it a number: the distance between a lesion's CNN embedding and the patient's other
lesions, scaled within the patient. Here: the cosine distance to the mean embedding of the patient's *other* lesions
(of unit-length embeddings, leaving the lesion itself out, so one odd mole does not pull the reference towards itself), min-max scaled within
the patient, optionally mixed with relative size.
"""
from __future__ import annotations

import numpy as np


def _min_max(values: np.ndarray) -> np.ndarray:
    span = values.max() - values.min() if values.size else 0.0
    return (values - values.min()) / span if span > 1e-12 else np.zeros_like(values)


def _lesion_rows(values, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be (n_lesions, n_features), got shape {x.shape}")
    return x


def cosine_distance_to_others(embeddings: np.ndarray) -> np.ndarray:
    """(n,) cosine distance of each row to the mean of all *other* rows (after scaling rows to unit length, so a
    lesion's weight in the reference does not depend on its embedding's magnitude); 0 for a single lesion."""
    e = _lesion_rows(embeddings, "embeddings")
    n = len(e)
    if n < 2:
        return np.zeros(n)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)  # direction only: cosine space
    others = (e.sum(0, keepdims=True) - e) / (n - 1)
    dot = (e * others).sum(1)
    norms = np.linalg.norm(e, axis=1) * np.linalg.norm(others, axis=1)
    cosine = np.where(norms > 1e-12, dot / np.maximum(norms, 1e-12), 1.0)  # a zero vector is "like the others"
    return np.clip(1.0 - cosine, 0.0, 2.0)


def ugly_duckling_scores(embeddings: np.ndarray, sizes: np.ndarray | None = None, size_weight: float = 0.0,
                         neighbours: int = 0) -> np.ndarray:
    """(n,) scores in [0, 1] within one patient: 1 for the lesion most unlike the others, 0 for the most typical.

    ``neighbours`` > 0: the mean cosine distance to that many nearest other lesions (:func:`knn_distance`); 0: the
    cosine distance to the mean of all others. ``size_weight`` in [0, 1] mixes in relative size (min-max scaled
    diameter), as the paper's combined score did; 0 uses the embedding alone. With fewer than two lesions, or when
    all are alike, every score is 0.
    """
    if not 0.0 <= size_weight <= 1.0:
        raise ValueError(f"size_weight must be in [0, 1], got {size_weight}")
    if neighbours < 0:
        raise ValueError(f"neighbours must be >= 0, got {neighbours}")
    distance = knn_distance(embeddings, neighbours, "cosine") if neighbours else cosine_distance_to_others(embeddings)
    score = _min_max(distance)
    if size_weight > 0 and sizes is not None and len(score) > 1:
        score = (1 - size_weight) * score + size_weight * _min_max(np.asarray(sizes, dtype=np.float64))
    return score


def ranks(scores: np.ndarray) -> np.ndarray:
    """(n,) 1-based ranks, 1 for the highest score; ties keep the input order."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    out = np.empty(len(order), dtype=int)
    out[order] = np.arange(1, len(order) + 1)
    return out


def knn_distance(features: np.ndarray, k: int = 3, metric: str = "cosine") -> np.ndarray:
    """(n,) mean distance of each row to its ``k`` nearest *other* rows: a mole is compared with the moles most like
    it, so one cluster of look-alikes does not hide an outlier of another cluster, and a patient with two kinds of
    moles has no ugly duckling by that alone. ``metric``: "cosine" (rows scaled to unit length) or "euclidean".
    0 for a single lesion."""
    x = _lesion_rows(features, "features")
    n = len(x)
    if n < 2:
        return np.zeros(n)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        d = np.clip(1.0 - x @ x.T, 0.0, 2.0)
    elif metric == "euclidean":
        sq = (x * x).sum(1)
        d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0))
    else:
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    np.fill_diagonal(d, np.inf)
    k = max(1, min(k, n - 1))
    return np.sort(d, axis=1)[:, :k].mean(1)


def mixed_scores(components: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """(n,) weighted sum of per-patient min-max scaled components (e.g. embedding distance, descriptor distance,
    P(malignant)); weights need not sum to 1, components without a weight are ignored."""
    total = None
    for name, w in weights.items():
        if w == 0:
            continue
        part = w * _min_max(np.asarray(components[name], dtype=np.float64))
        total = part if total is None else total + part
    if total is None:
        n = len(next(iter(components.values()))) if components else 0
        return np.zeros(n)
    return total
