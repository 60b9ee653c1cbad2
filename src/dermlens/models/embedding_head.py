"""One kind of head on the classifier's embedding: logistic regression on standardised features, for every yes/no
question asked of a photo's embedding (the gate's "is this skin?", the modality recogniser's "dermoscopic or
clinical?", screening's "is this crop a lesion?").

scikit-learn's estimator manners: ``EmbeddingHead(C=..., class_weight=...).fit(X, y)`` sets the fitted attributes
``classes_``, ``mean_``, ``scale_``, ``coef_``, ``intercept_``; ``predict_proba(X)`` gives (n, 2) probabilities of
``classes_``; ``probability(X)`` the second column. On disk: ``<name>.safetensors`` (mean, scale, coef, intercept as
float32) and ``<name>.json`` (classes, fitting parameters, ``info``: provenance, thresholds, figures), written
atomically through :mod:`dermlens.models.folder`. Files of earlier versions load too: a folded affine map
(``weight``, ``bias``: the gate's skin head and the modality recogniser) or a lesion head (``weight``, ``bias``,
``mean``, ``scale``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from dermlens.models.folder import write_json, write_tensors

FORMAT = "dermlens-embedding-head"


class HeadMismatchError(ValueError):
    """Features of another width than the head was fitted on."""


class EmbeddingHead:
    def __init__(self, C: float = 1.0, class_weight: str | dict | None = None, max_iter: int = 2000,
                 info: dict | None = None):
        self.C, self.class_weight, self.max_iter = C, class_weight, max_iter
        self.info = dict(info or {})

    # -- fitting and answering ---------------------------------------------------------------------------------

    def fit(self, features, labels) -> "EmbeddingHead":
        """Standardise ``features`` (n, d) and fit a logistic regression (scikit-learn) to two-valued ``labels``."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        x = np.asarray(features, dtype=np.float64)
        scaler = StandardScaler().fit(x)
        model = LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter)
        model.fit(scaler.transform(x), np.asarray(labels))
        if len(model.classes_) != 2:
            raise ValueError(f"an embedding head answers a yes/no question; got classes {list(model.classes_)}")
        self._set(model.classes_, scaler.mean_, scaler.scale_, model.coef_[0], float(model.intercept_[0]))
        return self

    def _set(self, classes, mean, scale, coef, intercept) -> None:
        self.classes_ = np.asarray(classes)
        self.mean_, self.scale_ = np.asarray(mean, np.float64), np.asarray(scale, np.float64)
        self.coef_, self.intercept_ = np.asarray(coef, np.float64), float(intercept)
        self.n_features_in_ = len(self.coef_)
        if not len(self.mean_) == len(self.scale_) == self.n_features_in_:
            raise ValueError("an embedding head's mean, scale and coefficients differ in length")

    def standardise(self, features) -> np.ndarray:
        """(n, d) features in the head's standard units (each feature by how unusual its value is)."""
        x = np.asarray(features.detach() if isinstance(features, torch.Tensor) else features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features_in_:
            raise HeadMismatchError(f"this head expects (n, {self.n_features_in_}) features, got {x.shape}")
        return (x - self.mean_) / self.scale_

    def decision_function(self, features) -> np.ndarray:
        return self.standardise(features) @ self.coef_ + self.intercept_

    def probability(self, features) -> np.ndarray:
        """(n,) probability of ``classes_[1]`` (the "yes")."""
        return 1.0 / (1.0 + np.exp(-self.decision_function(features)))

    def predict_proba(self, features) -> np.ndarray:
        p = self.probability(features)
        return np.stack([1 - p, p], axis=1)

    def predict(self, features) -> np.ndarray:
        return self.classes_[(self.probability(features) >= 0.5).astype(int)]

    # -- files -------------------------------------------------------------------------------------------------

    def save(self, folder: str | Path, name: str) -> Path:
        """``<name>.safetensors`` then ``<name>.json`` in ``folder``, each atomically; returns the folder."""
        folder = Path(folder)
        tensors = {k: torch.tensor(np.asarray(v, dtype=np.float32).reshape(-1)) for k, v in
                   {"mean": self.mean_, "scale": self.scale_, "coef": self.coef_, "intercept": [self.intercept_]}.items()}
        write_tensors(folder / f"{name}.safetensors", tensors, {"format": FORMAT})
        write_json(folder / f"{name}.json", {
            "format": FORMAT, "classes": self.classes_.tolist(), "n_features": self.n_features_in_,
            "params": {"C": self.C, "class_weight": self.class_weight, "max_iter": self.max_iter}, "info": self.info,
        })
        return folder

    @classmethod
    def load(cls, folder: str | Path, name: str, classes=(0, 1)) -> "EmbeddingHead":
        """A head saved by :meth:`save`, or an earlier version's file of that name (``classes`` then says what
        its two outputs mean; its JSON, if any, becomes ``info``)."""
        folder = Path(folder)
        weights, sidecar = folder / f"{name}.safetensors", folder / f"{name}.json"
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: no embedding head here")
        try:
            t = load_file(str(weights))
            meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
            if "coef" in t:
                head = cls(**meta.get("params", {}), info=meta.get("info", {}))
                head._set(meta.get("classes", list(classes)), t["mean"], t["scale"], t["coef"], float(t["intercept"][0]))
                return head
            return cls.from_tensors(t["weight"], t["bias"], t.get("mean"), t.get("scale"), classes, info=meta)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{weights}: unreadable embedding head ({type(e).__name__}: {e})") from e

    @classmethod
    def from_tensors(cls, weight, bias, mean=None, scale=None, classes=(0, 1), info: dict | None = None) -> "EmbeddingHead":
        """A head from an affine map, ``weight @ (x - mean) / scale + bias`` (mean 0 and scale 1 when the
        standardisation is folded into the weights, as earlier versions stored the skin and modality heads)."""
        weight = np.asarray(weight, np.float64).reshape(-1)
        head = cls(info=info)
        head._set(classes, np.zeros_like(weight) if mean is None else np.asarray(mean).reshape(-1),
                  np.ones_like(weight) if scale is None else np.asarray(scale).reshape(-1), weight,
                  float(np.asarray(bias).reshape(-1)[0]))
        return head


__all__ = ["EmbeddingHead", "HeadMismatchError"]
