"""The segmenter that ships with dermlens: it loads, and it finds lesions (generated ones; real ones when the data is here)."""
from pathlib import Path

import numpy as np
import pytest

from dermlens.segment.metrics import jaccard
from dermlens.segment.segmenter import BUNDLED_SEGMENTER_DIR, Segmenter

HAM10000 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ham10000"


@pytest.fixture(scope="module")
def bundled():
    return Segmenter()


def test_bundled_segmenter_is_described(bundled):
    assert (BUNDLED_SEGMENTER_DIR / "model.safetensors").is_file()
    assert bundled.config.target == "fraction"
    training = bundled.config.training
    assert "ham10000" in training["data"] and training["validation"]["n"] > 0
    assert 0 < training["validation"]["thresholded_jaccard"] <= 1


def test_bundled_segmenter_outlines_a_generated_lesion(bundled, lesion_pair_maker):
    rng = np.random.default_rng(3)
    scores = []
    for _ in range(4):
        image, mask = lesion_pair_maker(rng, size=(400, 300))
        fraction = bundled.fraction(image)
        assert fraction.shape == (300, 400)
        scores.append(jaccard(fraction, np.asarray(mask) / 255.0))
    assert np.mean(scores) > 0.7, scores


def test_bundled_segmenter_finds_little_in_plain_skin(bundled):
    skin = np.full((300, 400, 3), (205, 160, 135), dtype=np.uint8)
    assert (bundled.fraction(skin) >= 0.5).mean() < 0.2


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.skipif(not (HAM10000 / "labels.csv").is_file(), reason=f"HAM10000 not found at {HAM10000}")
def test_bundled_segmenter_on_ham10000_test_images(bundled):
    from dermlens.segment.metrics import thresholded_jaccard
    from dermlens.segment.pairs import load_pair, load_pairs

    pairs = load_pairs(HAM10000, "test")[:60]
    scores = [jaccard(bundled.fraction(p.image), load_pair(p)[1][0].numpy()) for p in pairs]
    assert thresholded_jaccard(scores) > 0.7, np.round(scores, 2)
