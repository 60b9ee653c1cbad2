"""A learnt ugly-duckling score: how unlike a lesion is to the patient's other moles, in the ways that matter.

The plain score (``score.cosine_distance_to_others``) measures every direction of the embedding alike, so a mole
that is merely under a hair, in a shadow or more blurred than the others stands out as much as one of another kind.
Here, fitted on labelled composite patients (never the ones it is scored on):

1. ``DucklingSpace``: the embedding, reduced by PCA and *whitened by the variation among one patient's ordinary
   moles* (within-class covariance normalisation): directions along which a patient's look-alike moles differ anyway
   (lighting, hair, blur, position) are shrunk; what is left is what separates kinds of moles.
2. Per lesion, features relative to the patient (:func:`patient_features`): distance to the k nearest of the
   patient's other moles and to their mean in that space, the same for the dermatologist's descriptors
   (``describe``: colour, size, border, pattern), P(malignant) and its excess over the patient's median.
3. ``DucklingRanker``: a logistic regression on those features, planted ugly duckling against ordinary mole; the
   score is its logit, scaled to [0, 1] within the patient.

Saved as ``ugly_duckling.safetensors`` + ``ugly_duckling.json`` beside the lesion head.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from dermlens.screen.score import _min_max, knn_distance

FEATURES = ("space_knn", "space_mean", "descriptor_knn", "descriptor_mean", "p_malignant", "p_malignant_excess",
            "relative_size")
WEIGHTS = "ugly_duckling.safetensors"
CONFIG = "ugly_duckling.json"


def _distance_to_mean_of_others(x: np.ndarray) -> np.ndarray:
    n = len(x)
    if n < 2:
        return np.zeros(n)
    others = (x.sum(0, keepdims=True) - x) / (n - 1)
    return np.linalg.norm(x - others, axis=1)


@dataclass
class DucklingSpace:
    mean: np.ndarray  # (d,)
    projection: np.ndarray  # (d, k): PCA then within-patient whitening

    @classmethod
    def fit(cls, embeddings: np.ndarray, patients: np.ndarray, dims: int = 48, shrink: float = 0.1) -> "DucklingSpace":
        """``embeddings`` of ordinary moles and their ``patients``: PCA to ``dims``, then whitening by the pooled
        within-patient covariance (shrunk towards its mean eigenvalue by ``shrink``)."""
        e = np.asarray(embeddings, np.float64)
        mean = e.mean(0)
        _, _, vt = np.linalg.svd(e - mean, full_matrices=False)
        pca = vt[: min(dims, len(vt))].T
        z = (e - mean) @ pca
        within = np.zeros((z.shape[1], z.shape[1]))
        count = 0
        for p in np.unique(patients):
            zp = z[patients == p]
            if len(zp) > 1:
                d = zp - zp.mean(0)
                within += d.T @ d
                count += len(zp) - 1
        within /= max(count, 1)
        within = (1 - shrink) * within + shrink * np.trace(within) / len(within) * np.eye(len(within))
        values, vectors = np.linalg.eigh(within)
        whiten = vectors / np.sqrt(np.maximum(values, 1e-9))
        return cls(mean, pca @ whiten)

    def transform(self, embeddings: np.ndarray) -> np.ndarray:
        return (np.asarray(embeddings, np.float64) - self.mean) @ self.projection


def patient_features(space_points: np.ndarray, descriptors: np.ndarray, p_malignant: np.ndarray,
                     diameters: np.ndarray, k: int = 3) -> np.ndarray:
    """(n, len(FEATURES)) for one patient's lesions; ``descriptors`` already standardised."""
    p = np.asarray(p_malignant, np.float64)
    size = np.log(np.asarray(diameters, np.float64))
    return np.column_stack([
        knn_distance(space_points, k, "euclidean"), _distance_to_mean_of_others(space_points),
        knn_distance(descriptors, k, "euclidean"), _distance_to_mean_of_others(descriptors),
        p, p - (np.median(p) if len(p) else 0.0), size - (np.median(size) if len(size) else 0.0),
    ])


@dataclass
class DucklingRanker:
    space: DucklingSpace
    descriptor_mean: np.ndarray
    descriptor_scale: np.ndarray
    weight: np.ndarray  # on standardised patient features
    bias: float
    feature_mean: np.ndarray
    feature_scale: np.ndarray
    k: int = 3
    info: dict = field(default_factory=dict)

    def features(self, embeddings, descriptors, p_malignant, diameters) -> np.ndarray:
        desc = (np.asarray(descriptors, np.float64) - self.descriptor_mean) / self.descriptor_scale
        return patient_features(self.space.transform(embeddings), desc, p_malignant, diameters, self.k)

    def scores(self, embeddings, descriptors, p_malignant, diameters) -> np.ndarray:
        """(n,) in [0, 1] within one patient: 1 the most likely ugly duckling. Fewer than two lesions: zeros."""
        if len(p_malignant) < 2:
            return np.zeros(len(p_malignant))
        f = self.features(embeddings, descriptors, p_malignant, diameters)
        return _min_max(((f - self.feature_mean) / self.feature_scale) @ self.weight + self.bias)

    @classmethod
    def fit(cls, patients: list[dict], c: float = 0.1, k: int = 3) -> "DucklingRanker":
        """``patients``: dicts of arrays ``embedding``, ``descriptors``, ``p_malignant``, ``diameter`` and bool
        ``planted`` (the lesions a screener kept in one labelled photo)."""
        from sklearn.linear_model import LogisticRegression

        ordinary = [(p["embedding"][~p["planted"]], np.full((~p["planted"]).sum(), i)) for i, p in enumerate(patients)]
        space = DucklingSpace.fit(np.concatenate([o[0] for o in ordinary]), np.concatenate([o[1] for o in ordinary]))
        all_desc = np.concatenate([p["descriptors"] for p in patients])
        d_mean, d_scale = all_desc.mean(0), all_desc.std(0) + 1e-6
        ranker = cls(space, d_mean, d_scale, np.zeros(len(FEATURES)), 0.0, np.zeros(len(FEATURES)), np.ones(len(FEATURES)), k)
        xs, ys = [], []
        for p in patients:
            if len(p["p_malignant"]) >= 2:
                xs.append(ranker.features(p["embedding"], p["descriptors"], p["p_malignant"], p["diameter"]))
                ys.append(p["planted"])
        x, y = np.concatenate(xs), np.concatenate(ys)
        ranker.feature_mean, ranker.feature_scale = x.mean(0), x.std(0) + 1e-6
        clf = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit((x - ranker.feature_mean) / ranker.feature_scale, y)
        ranker.weight, ranker.bias = clf.coef_[0], float(clf.intercept_[0])
        ranker.info = {"features": list(FEATURES), "weights": dict(zip(FEATURES, map(float, ranker.weight))),
                       "patients": len(xs), "lesions": int(len(y)), "planted": int(y.sum()), "C": c, "k": k}
        return ranker

    def save(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        arrays = {"space_mean": self.space.mean, "space_projection": self.space.projection,
                  "descriptor_mean": self.descriptor_mean, "descriptor_scale": self.descriptor_scale,
                  "weight": self.weight, "bias": np.array([self.bias]), "feature_mean": self.feature_mean,
                  "feature_scale": self.feature_scale}
        save_file({k: torch.tensor(np.asarray(v, np.float32)) for k, v in arrays.items()}, str(out / WEIGHTS))
        (out / CONFIG).write_text(json.dumps({"k": self.k, **self.info}, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, folder: str | Path) -> "DucklingRanker":
        folder = Path(folder)
        for path in (folder / WEIGHTS, folder / CONFIG):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no ugly-duckling ranker here (expected {WEIGHTS} and {CONFIG})")
        try:
            t = {k: v.double().numpy() for k, v in load_file(str(folder / WEIGHTS)).items()}
            info = json.loads((folder / CONFIG).read_text())
            return cls(DucklingSpace(t["space_mean"], t["space_projection"]), t["descriptor_mean"], t["descriptor_scale"],
                       t["weight"], float(t["bias"][0]), t["feature_mean"], t["feature_scale"], int(info.pop("k")), info)
        except (KeyError, ValueError, json.JSONDecodeError) as e:
            raise ValueError(f"{folder}: unreadable ugly-duckling ranker ({type(e).__name__}: {e})") from e
