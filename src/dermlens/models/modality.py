"""Which kind of photo is this: dermoscopic or clinical?

Triage has one operating point per modality (a dermoscopic melanoma and a clinical one look different to the
network, and so do their score distributions), so a photo whose modality the caller does not state is recognised
from the classifier's own embedding by a logistic head, fitted at the end of training on the training images.
The head lives beside the model as ``modality_head.safetensors`` (weight and bias over the standardised
embedding, folded into one affine map) and is named in the model's config.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from dermlens.models.features import extract_features

if TYPE_CHECKING:
    from dermlens.data.records import Record
    from dermlens.data.transforms import Preprocessing
    from dermlens.models.saved import ModelConfig

MODALITIES = ("dermoscopic", "clinical")
HEAD_FILE = "modality_head.safetensors"


class ModalityRecogniser:
    """P(clinical) from an embedding: ``recognise(features)`` gives one modality name per row."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        self.weight, self.bias = weight.float().reshape(-1), bias.float().reshape(())

    def p_clinical(self, features: torch.Tensor) -> np.ndarray:
        return torch.sigmoid(features.float() @ self.weight + self.bias).numpy()

    def recognise(self, features: torch.Tensor) -> list[str]:
        return [MODALITIES[int(p >= 0.5)] for p in self.p_clinical(features)]

    @classmethod
    def load(cls, model_dir: str | Path) -> "ModalityRecogniser | None":
        """The model folder's head, or None for a model trained on one modality."""
        path = Path(model_dir) / HEAD_FILE
        if not path.is_file():
            return None
        tensors = load_file(str(path))
        return cls(tensors["weight"], tensors["bias"])


def check_modality(modality: str | None) -> str | None:
    """None or "auto" (recognise it), or one of MODALITIES; anything else is one clear error."""
    if modality in (None, "auto"):
        return None
    if modality not in MODALITIES:
        raise ValueError(f"modality must be auto, {' or '.join(MODALITIES)}; got {modality!r}")
    return modality


def fit_modality_head(
    model: torch.nn.Module,
    records: list["Record"],
    preprocessing: "Preprocessing",
    model_dir: str | Path,
    config: "ModelConfig",
    *,
    per_modality: int = 800,
    seed: int = 0,
    num_workers: int = 2,
    progress: bool = True,
) -> None:
    """Fit the recogniser on up to ``per_modality`` training images of each modality and save it with the model."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from dermlens.data.torch_dataset import RecordDataset
    from dermlens.data.transforms import build_eval_transform

    rng = random.Random(seed)
    chosen: list[Record] = []
    for modality in MODALITIES:
        pool = [r for r in records if r.modality == modality]
        chosen += rng.sample(pool, min(per_modality, len(pool)))
    labels = np.array([MODALITIES.index(r.modality) for r in chosen])
    loader = DataLoader(RecordDataset(chosen, build_eval_transform(preprocessing)), batch_size=64, num_workers=num_workers)
    with tqdm(total=len(chosen), desc="modality head", unit="img", disable=not progress, leave=False) as bar:
        features = extract_features(model, loader, progress=bar).numpy()
    scaler = StandardScaler().fit(features)
    head = LogisticRegression(C=0.1, max_iter=2000).fit(scaler.transform(features), labels)
    # Fold the standardisation into the affine map: w·(x - mu)/sigma + b = (w/sigma)·x + (b - w·mu/sigma).
    weight = head.coef_[0] / scaler.scale_
    bias = head.intercept_[0] - float(weight @ scaler.mean_)
    save_file({"weight": torch.tensor(weight, dtype=torch.float32), "bias": torch.tensor([bias], dtype=torch.float32)},
              str(Path(model_dir) / HEAD_FILE))
    counts = {m: int((labels == i).sum()) for i, m in enumerate(MODALITIES)}
    config.modality_head = {
        "file": HEAD_FILE, "classes": list(MODALITIES), "fitted_on": f"training images {counts}",
        "training_accuracy": float(head.score(scaler.transform(features), labels)),
    }


__all__ = ["MODALITIES", "ModalityRecogniser", "check_modality", "fit_modality_head"]
