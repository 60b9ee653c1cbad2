"""Training the lesion/not-lesion head on the detector's candidates in labelled wide-field photos.

Every candidate the detector reports in a photo of a labelled folder (:mod:`dermlens.screen.truth`) becomes one
example: a lesion when its box holds a true lesion's centre, not a lesion otherwise. The head is fitted on the
classifier's embedding of the candidate crops (:func:`dermlens.screen.lesion_head.fit_lesion_head`). The folder must
come from HAM10000's ``train`` split; the ``test`` split is kept for the figures.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dermlens.screen.lesion_head import fit_lesion_head, model_digest
from dermlens.screen.screener import ScreenConfig, Screener
from dermlens.screen.truth import load_benchmark, match, read_manifest


def train_lesion_head(benchmark_dir: str | Path, out_dir: str | Path, model_dir: str | Path | None = None,
                      config: ScreenConfig | None = None, target_recall: float = 0.98, progress: bool = True) -> Path:
    """Fit the head on detector candidates of a train-split labelled folder; returns the head's folder."""
    from tqdm.auto import tqdm

    folder = Path(benchmark_dir)
    split = read_manifest(folder).get("split", "?")
    if split == "test":
        raise ValueError(f"{folder}: made from the test split; train the lesion head on a train-split benchmark")
    records = load_benchmark(folder)
    screener = Screener(model_dir, lesion_head=False, config=config or ScreenConfig())
    features, labels, groups = [], [], []
    for k, record in enumerate(tqdm(records, desc="candidates", unit="photo", disable=not progress)):
        result = screener.analyse_photo(record["image"])
        found = match([t["box"] for t in record["lesions"]], [lesion.box for lesion in result.lesions])
        for lesion, truth_index in zip(result.lesions, found):
            features.append(lesion.embedding)
            labels.append(truth_index >= 0)
            groups.append(k)
    head = fit_lesion_head(np.stack(features), np.array(labels), np.array(groups), target_recall=target_recall)
    head.info.update({
        "model_digest": model_digest(screener.predictor.model_dir),
        "features": "pre-logit embedding (models.features.pre_logits) of a square crop, "
                    f"{screener.config.crop_context}x the candidate box",
        "trained_on": f"detector candidates of {folder} (split {split}, {len(records)} photos): a candidate "
                      "holding a pasted HAM10000 lesion's centre is a lesion, any other is not",
        "detector": screener.config.detector.to_dict(),
    })
    return head.save(out_dir)
