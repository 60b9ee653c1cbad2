"""Which kind of photo is this: dermoscopic or clinical?

Triage has one operating point per modality (a dermoscopic melanoma and a clinical one look different to the
network, and so do their score distributions), so a photo whose modality the caller does not state is recognised
from the classifier's own embedding by a logistic head, fitted at the end of training on the training images.
The head lives beside the model as ``modality_head.safetensors`` + ``modality_head.json`` (an
:class:`~dermlens.models.embedding_head.EmbeddingHead`, the one kind of head on the embedding; earlier versions'
file, a folded affine map, loads too) and is named in the model's config.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from dermlens.models.embedding_head import EmbeddingHead
from dermlens.models.features import extract_features

if TYPE_CHECKING:
    from dermlens.data.records import Record
    from dermlens.data.transforms import Preprocessing
    from dermlens.models.saved import ModelConfig

MODALITIES = ("dermoscopic", "clinical")
HEAD_NAME = "modality_head"
HEAD_FILE = f"{HEAD_NAME}.safetensors"


class ModalityRecogniser:
    """``recognise(features)`` gives one modality name per embedding row."""

    def __init__(self, head: EmbeddingHead):
        self.head = head

    def p_clinical(self, features: torch.Tensor) -> np.ndarray:
        return self.head.predict_proba(features)[:, list(self.head.classes_).index("clinical")]

    def recognise(self, features: torch.Tensor) -> list[str]:
        return [str(m) for m in self.head.predict(features)]

    @classmethod
    def load(cls, model_dir: str | Path) -> "ModalityRecogniser | None":
        """The model folder's head, or None for a model trained on one modality."""
        if not (Path(model_dir) / HEAD_FILE).is_file():
            return None
        return cls(EmbeddingHead.load(model_dir, HEAD_NAME, classes=MODALITIES))  # earlier files: P(clinical)


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
    head = EmbeddingHead(C=0.1, max_iter=2000).fit(features, np.array(MODALITIES)[labels])
    counts = {m: int((labels == i).sum()) for i, m in enumerate(MODALITIES)}
    head.info = {"fitted_on": f"training images {counts}",
                 "training_accuracy": float((head.predict(features) == np.array(MODALITIES)[labels]).mean())}
    head.save(model_dir, HEAD_NAME)  # the config that names it is saved with the model afterwards
    config.modality_head = {"file": HEAD_FILE, "classes": list(MODALITIES), **head.info}


__all__ = ["MODALITIES", "ModalityRecogniser", "check_modality", "fit_modality_head"]
