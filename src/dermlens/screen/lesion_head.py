"""Lesion or not: a logistic head on the bundled classifier's 1280-number embedding of a candidate crop.

The detector is generous (hair knots, tattoo blobs, clothing corners, dark pores in a shadow); the classifier's
embedding already knows what a dermoscopic lesion looks like, so a linear head on it sorts candidates cheaply. It is
trained by :func:`dermlens.screen.train_head.train_lesion_head` on detector candidates from a screening benchmark made
from HAM10000's ``train`` split: a candidate whose box holds a pasted lesion's centre is a lesion, every other one is
not.

Saved as ``lesion_head.safetensors`` (weight, bias, feature mean and scale) plus ``lesion_head.json`` (threshold,
the model it reads, provenance, validation figures). The head is tied to the network whose embedding it reads: the
JSON stores that network's weights digest and :class:`LesionHead` refuses another.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

BUNDLED_HEAD_DIR = Path(__file__).resolve().parent.parent / "weights" / "screen"
HEAD_WEIGHTS = "lesion_head.safetensors"
HEAD_CONFIG = "lesion_head.json"


def model_digest(model_dir: str | Path) -> str:
    """First 16 hex digits of the SHA-256 of a model folder's weights: which network an embedding came from."""
    digest = hashlib.sha256()
    with open(Path(model_dir) / "model.safetensors", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


class HeadMismatchError(ValueError):
    pass


@dataclass
class LesionHead:
    weight: np.ndarray  # (n_features,)
    bias: float
    mean: np.ndarray  # standardisation of the features
    scale: np.ndarray
    threshold: float = 0.5
    info: dict = field(default_factory=dict)  # model_digest, provenance, validation figures

    def probability(self, features: np.ndarray) -> np.ndarray:
        """(n,) P(lesion) for (n, n_features) embeddings."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != len(self.weight):
            raise HeadMismatchError(f"lesion head expects (n, {len(self.weight)}) features, got {features.shape}")
        logits = ((features - self.mean) / self.scale) @ self.weight + self.bias
        return 1.0 / (1.0 + np.exp(-logits))

    def check_model(self, model_dir: str | Path, head_dir: str | Path = "") -> None:
        expected = self.info.get("model_digest")
        if expected and expected != model_digest(model_dir):
            raise HeadMismatchError(
                f"{head_dir or 'lesion head'}: trained on the embedding of another model (digest {expected}) than "
                f"{model_dir}; train one for it with `dermlens screen train-head --model {model_dir}`"
            )

    def save(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: torch.tensor(np.asarray(v, dtype=np.float32).reshape(-1))
                   for k, v in {"weight": self.weight, "bias": [self.bias], "mean": self.mean, "scale": self.scale}.items()}
        save_file(tensors, str(out / HEAD_WEIGHTS))
        (out / HEAD_CONFIG).write_text(json.dumps({"threshold": self.threshold, "n_features": len(self.weight), **self.info}, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, head_dir: str | Path) -> "LesionHead":
        folder = Path(head_dir)
        weights, config = folder / HEAD_WEIGHTS, folder / HEAD_CONFIG
        for path in (weights, config):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no lesion head here (expected {HEAD_WEIGHTS} and {HEAD_CONFIG})")
        try:
            info = json.loads(config.read_text())
            t = load_file(str(weights))
            head = cls(t["weight"].double().numpy(), float(t["bias"][0]), t["mean"].double().numpy(),
                       t["scale"].double().numpy(), float(info.pop("threshold")), info)
        except (KeyError, ValueError, json.JSONDecodeError) as e:
            raise ValueError(f"{folder}: unreadable lesion head ({type(e).__name__}: {e})") from e
        if not (len(head.weight) == len(head.mean) == len(head.scale)):
            raise ValueError(f"{weights}: weight, mean and scale differ in length")
        return head


def fit_lesion_head(features: np.ndarray, is_lesion: np.ndarray, groups: np.ndarray, target_recall: float = 0.98,
                    c: float = 0.05, seed: int = 0) -> LesionHead:
    """Logistic regression (scikit-learn, balanced classes) on standardised features.

    The threshold is chosen on a held-out 25 % of the photos (``groups``) so that ``target_recall`` of the true
    lesions pass; the head is then refit on everything. Held-out figures go into ``info``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupShuffleSplit

    x, y = np.asarray(features, np.float64), np.asarray(is_lesion, bool)
    if y.all() or not y.any():
        raise ValueError("the lesion head needs both lesion and non-lesion candidates to learn from")

    def fit(xs, ys):
        mean, scale = xs.mean(0), xs.std(0) + 1e-6
        clf = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit((xs - mean) / scale, ys)
        return LesionHead(clf.coef_[0], float(clf.intercept_[0]), mean, scale)

    train_idx, val_idx = next(GroupShuffleSplit(n_splits=1, test_size=0.25, random_state=seed).split(x, y, groups))
    held = fit(x[train_idx], y[train_idx])
    p_val, y_val = held.probability(x[val_idx]), y[val_idx]
    threshold = float(np.quantile(p_val[y_val], 1 - target_recall)) if y_val.any() else 0.5
    final = fit(x, y)
    final.threshold = threshold
    pred = p_val >= threshold
    final.info["validation"] = {
        "photos": int(len(np.unique(groups[val_idx]))),
        "candidates": int(len(val_idx)),
        "lesions": int(y_val.sum()),
        "auc": float(roc_auc_score(y_val, p_val)) if 0 < y_val.sum() < len(y_val) else None,
        "lesion_recall": float(pred[y_val].mean()) if y_val.any() else None,
        "non_lesion_rejected": float((~pred[~y_val]).mean()) if (~y_val).any() else None,
        "target_recall": target_recall,
    }
    final.info["training"] = {"candidates": int(len(y)), "lesions": int(y.sum()), "C": c}
    return final
