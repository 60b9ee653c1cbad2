"""Screening's lesion crops are answered one at a time: orientation averaging by default."""
from __future__ import annotations

import numpy as np
from PIL import Image

from dermlens.data.synthetic import SYNTHETIC_CLASSES
from dermlens.data.synthetic.drawing import render_lesion


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    lesion = render_lesion(SYNTHETIC_CLASSES[seed % len(SYNTHETIC_CLASSES)], np.random.default_rng(seed), size=96)
    return lesion.resize((width, height), Image.BILINEAR)


def test_screen_crops_are_averaged_by_default(tiny_model_dir):
    from dermlens.screen.screener import Screener

    screener = Screener(tiny_model_dir, lesion_head=False)
    assert screener.predictor.tta == 8
    crop = np.asarray(photo(70, 70, seed=5))
    analyses = screener.predictor.analyse([crop, np.rot90(crop).copy(), crop[:, ::-1].copy()], with_embedding=True)
    class_probs = [a.class_probabilities for a in analyses]
    embeddings = [a.embedding for a in analyses]
    np.testing.assert_allclose(class_probs[1], class_probs[0], atol=1e-5)
    np.testing.assert_allclose(class_probs[2], class_probs[0], atol=1e-5)
    np.testing.assert_allclose(embeddings[1], embeddings[0], atol=1e-4)
    assert Screener(tiny_model_dir, lesion_head=False, tta=1).predictor.tta == 1
