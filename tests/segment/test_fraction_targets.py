import numpy as np
import pytest

from dermlens.segment.targets import area_fraction, block_fraction


def test_block_fraction_is_the_exact_covered_share():
    fine = np.zeros((8, 8))
    fine[0:3, 0:4] = 1  # covers 3 of the 4 rows of the top-left 4x4 block
    coarse = block_fraction(fine, 4)
    assert coarse.shape == (2, 2)
    assert coarse[0, 0] == pytest.approx(12 / 16)
    assert coarse.sum() * 16 == pytest.approx(fine.sum())


def test_block_fraction_rejects_a_size_that_does_not_divide():
    with pytest.raises(ValueError, match="not a multiple"):
        block_fraction(np.zeros((10, 8)), 4)


def test_area_fraction_keeps_partial_pixels_partial_and_the_total_area():
    mask = np.zeros((150, 200), dtype=np.uint8)
    mask[30:101, 50:131] = 255  # 71 x 81 pixels, edges not on the coarse grid
    coarse = area_fraction(mask, (40, 30))  # factor 5
    assert coarse.min() >= 0 and coarse.max() <= 1
    partial = (coarse > 0) & (coarse < 1)
    assert partial.any(), "edge pixels must carry fractions, not 0/1"
    assert coarse.sum() * 25 == pytest.approx((mask > 0).sum(), rel=1e-4)


def test_area_fraction_accepts_masks_already_in_unit_range():
    mask = np.zeros((20, 20), dtype=np.float32)
    mask[:10] = 1.0
    assert area_fraction(mask, (10, 10)).sum() == pytest.approx(50.0)
