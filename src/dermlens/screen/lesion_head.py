"""Lesion or not: a logistic head on the bundled classifier's 1280-number embedding of a candidate crop.

The detector is generous (hair knots, tattoo blobs, clothing corners, dark pores in a shadow); the classifier's
embedding already knows what a dermoscopic lesion looks like, so a linear head on it sorts candidates cheaply. It is
trained by :func:`dermlens.screen.train_head.train_lesion_head` on detector candidates from a screening benchmark made
from HAM10000's ``train`` split: a candidate whose box holds a pasted lesion's centre is a lesion, every other one is
not.

An :class:`~dermlens.models.embedding_head.EmbeddingHead` like the gate's skin head and the modality recogniser,
saved as ``lesion_head.safetensors`` + ``lesion_head.json``; its ``info`` holds the threshold, the model it reads,
provenance and validation figures. The head is tied to the network whose embedding it reads: ``info`` stores that
network's weights digest and :meth:`LesionHead.check_model` refuses another.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from dermlens.models.embedding_head import EmbeddingHead, HeadMismatchError

BUNDLED_HEAD_DIR = Path(__file__).resolve().parent.parent / "weights" / "screen"
HEAD_NAME = "lesion_head"
HEAD_WEIGHTS = f"{HEAD_NAME}.safetensors"
HEAD_CONFIG = f"{HEAD_NAME}.json"


def model_digest(model_dir: str | Path) -> str:
    """First 16 hex digits of the SHA-256 of a model folder's weights: which network an embedding came from."""
    digest = hashlib.sha256()
    with open(Path(model_dir) / "model.safetensors", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


class LesionHead(EmbeddingHead):
    """P(lesion) for a candidate crop's embedding; a crop is kept when it reaches ``threshold``."""

    @property
    def threshold(self) -> float:
        return float(self.info.get("threshold", 0.5))

    @threshold.setter
    def threshold(self, value: float) -> None:
        self.info["threshold"] = float(value)

    def check_model(self, model_dir: str | Path, head_dir: str | Path = "") -> None:
        expected = self.info.get("model_digest")
        if expected and expected != model_digest(model_dir):
            raise HeadMismatchError(
                f"{head_dir or 'lesion head'}: trained on the embedding of another model (digest {expected}) than "
                f"{model_dir}; train one for it with `dermlens screen train-head --model {model_dir}`"
            )

    def save(self, out_dir: str | Path, name: str = HEAD_NAME) -> Path:
        return super().save(out_dir, name)

    @classmethod
    def load(cls, head_dir: str | Path, name: str = HEAD_NAME, classes=(False, True)) -> "LesionHead":
        folder = Path(head_dir)
        for path in (folder / f"{name}.safetensors", folder / f"{name}.json"):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no lesion head here (expected {HEAD_WEIGHTS} and {HEAD_CONFIG})")
        return super().load(folder, name, classes)


def fit_lesion_head(features: np.ndarray, is_lesion: np.ndarray, groups: np.ndarray, target_recall: float = 0.98,
                    c: float = 0.05, seed: int = 0) -> LesionHead:
    """An embedding head (logistic regression on standardised features, balanced classes).

    The threshold is chosen on a held-out 25 % of the photos (``groups``) so that ``target_recall`` of the true
    lesions pass; the head is then refit on everything. Held-out figures go into ``info``.
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupShuffleSplit

    x, y = np.asarray(features, np.float64), np.asarray(is_lesion, bool)
    if y.all() or not y.any():
        raise ValueError("the lesion head needs both lesion and non-lesion candidates to learn from")

    def fit(xs, ys):
        return LesionHead(C=c, class_weight="balanced", max_iter=2000).fit(xs, ys)

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
