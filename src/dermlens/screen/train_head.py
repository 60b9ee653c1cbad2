"""Fitting the screening heads on the detector's candidates in labelled wide-field photos.

Every candidate the detector reports in a photo of a labelled folder (:mod:`dermlens.screen.truth`) becomes one
example: a lesion when its box holds a true lesion's centre, not a lesion otherwise. Fitted, into one folder:

- the embedding head (:func:`dermlens.screen.lesion_head.fit_lesion_head` on the classifier's embedding of the crop);
- the descriptor head (the same fit on ``describe.head_features``), in ``descriptor/`` (see ``lesion_filter``);
- optionally (``with_ranker``) the ugly-duckling ranker (``ugly_duckling.DucklingRanker``) on the candidates the two
  heads keep, planted lesions against the rest.

The folder must not come from a test split; composites of every way of composing (``benchmarks/screen_compose.py
--split train``) make heads that hold on photos composed another way.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dermlens.screen.describe import head_features
from dermlens.screen.lesion_filter import DESCRIPTOR_DIR, keep_lesions
from dermlens.screen.lesion_head import fit_lesion_head, model_digest
from dermlens.screen.screener import ScreenConfig, Screener
from dermlens.screen.truth import load_benchmark, match, read_manifest
from dermlens.screen.ugly_duckling import DucklingRanker


def fit_screening_heads(examples: dict[str, np.ndarray], out_dir: str | Path, target_recall: float = 0.995,
                        info: dict | None = None, with_ranker: bool = False) -> Path:
    """Fit and save the heads from per-candidate arrays ``embedding``, ``descriptors``, ``contrast``, ``diameter``,
    ``p_malignant``, ``is_lesion``, ``planted`` and ``photo`` (a photo is one patient); the ugly-duckling ranker
    only ``with_ranker`` (it did not beat the plain score on held-out composites, so it is not shipped)."""
    e, d, photo = examples["embedding"], examples["descriptors"], np.asarray(examples["photo"])
    y = np.asarray(examples["is_lesion"], bool)
    embedding_head = fit_lesion_head(e, y, photo, target_recall=target_recall)
    descriptor_head = fit_lesion_head(head_features(d, examples["contrast"], examples["diameter"]), y, photo,
                                      target_recall=target_recall)
    info = info or {}
    embedding_head.info.update(info)
    descriptor_head.info.update(info | {"features": "describe.head_features: crop descriptors, log contrast, log size and their squares"})
    out = embedding_head.save(out_dir)
    descriptor_head.save(out / DESCRIPTOR_DIR)
    if not with_ranker:
        return out
    keep, _ = keep_lesions(embedding_head, descriptor_head, e, d, examples["contrast"], examples["diameter"])
    patients = []
    for p in np.unique(photo):
        idx = np.flatnonzero((photo == p) & keep)
        if len(idx) >= 2:
            patients.append({k: np.asarray(examples[k])[idx] for k in ("embedding", "descriptors", "p_malignant", "diameter")}
                            | {"planted": np.asarray(examples["planted"], bool)[idx]})
    ranker = DucklingRanker.fit(patients)
    ranker.info.update({k: v for k, v in info.items() if k != "features"})
    ranker.save(out)
    return out


def train_lesion_head(benchmark_dir: str | Path, out_dir: str | Path, model_dir: str | Path | None = None,
                      config: ScreenConfig | None = None, target_recall: float = 0.995, progress: bool = True) -> Path:
    """Fit the screening heads on detector candidates of a train-split labelled folder; returns the heads' folder."""
    from tqdm.auto import tqdm

    folder = Path(benchmark_dir)
    split = read_manifest(folder).get("split", "?")
    if split == "test":
        raise ValueError(f"{folder}: made from the test split; train the lesion head on a train-split benchmark")
    records = load_benchmark(folder)
    screener = Screener(model_dir, lesion_head=False, config=config or ScreenConfig())
    rows = {k: [] for k in ("embedding", "descriptors", "contrast", "diameter", "p_malignant", "is_lesion", "planted", "photo")}
    for k, record in enumerate(tqdm(records, desc="candidates", unit="photo", disable=not progress)):
        result = screener.analyse_photo(record["image"])
        found = match([t["box"] for t in record["lesions"]], [lesion.box for lesion in result.lesions])
        for lesion, truth_index in zip(result.lesions, found):
            for key, value in (("embedding", lesion.embedding), ("descriptors", lesion.descriptors),
                               ("contrast", lesion.contrast), ("diameter", lesion.diameter),
                               ("p_malignant", lesion.p_malignant), ("is_lesion", truth_index >= 0),
                               ("planted", truth_index >= 0 and record["lesions"][truth_index]["planted"]), ("photo", k)):
                rows[key].append(value)
    examples = {k: np.array(v) for k, v in rows.items()}
    return fit_screening_heads(examples, out_dir, target_recall, {
        "model_digest": model_digest(screener.predictor.model_dir),
        "features": "pre-logit embedding (models.features.pre_logits) of a square crop, "
                    f"{screener.config.crop_context}x the candidate box",
        "trained_on": f"detector candidates of {folder} (split {split}, {len(records)} photos): a candidate "
                      "holding a composed lesion's centre is a lesion, any other is not",
        "detector": screener.config.detector.to_dict(),
    })
