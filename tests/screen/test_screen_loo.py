"""The leave-one-out screening benchmark: each way of composing on a tiny generated case, masks estimated for
sources without them, and a split that never lets the held-out source, the held-out way or PH2 into fitting."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import screen_loo
import screen_loo_fit
import screen_sources


def dermoscopic_like(seed=0):
    """A light 150x200 'dermoscopic photo' with a dark round lesion, and its mask."""
    rng = np.random.default_rng(seed)
    rgb = np.full((150, 200, 3), (215, 170, 150), np.float32) * (1 + 0.02 * rng.standard_normal((150, 200, 1)))
    mask = np.zeros((150, 200), np.uint8)
    cv2.circle(mask, (100, 75), 35, 255, -1)
    rgb[mask > 0] = (95, 60, 45)
    return np.clip(rgb, 0, 255).astype(np.uint8), mask


def darker_than_ring(photo, box, margin=8):
    x0, y0, x1, y1 = box
    lum = photo.astype(float).mean(2)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    inner = lum[cy - 3: cy + 4, cx - 3: cx + 4].mean()
    outer = np.concatenate([lum[max(0, y0 - margin): y0, x0:x1].ravel(), lum[y1: y1 + margin, x0:x1].ravel()])
    return inner < outer.mean() - 10


@pytest.mark.parametrize("way", screen_sources.WAYS)
@pytest.mark.parametrize("tone", [0.1, 0.9])
def test_each_way_places_every_lesion_darker_than_its_skin(way, tone):
    rgb, mask = dermoscopic_like()
    photo, boxes = screen_sources.compose_photo([(rgb, mask)] * 3, way, tone, clutter=False,
                                                rng=np.random.default_rng(1), size=(320, 240))
    assert photo.shape == (240, 320, 3) and photo.dtype == np.uint8
    assert all(b is not None for b in boxes)
    for box in boxes:
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240
        assert 10 <= max(x1 - x0, y1 - y0) <= 66  # lesion sizes of the ways (24-64 px; disc lesions ~20-50)
        assert darker_than_ring(photo, box)


def test_a_disc_carries_its_own_skin_and_a_soft_edge():
    rgb, mask = dermoscopic_like()
    disc = screen_sources.make_disc_sprite(rgb, mask, 50, np.random.default_rng(0))
    assert disc.rgb.shape == (50, 50, 3) and disc.alpha.shape == (50, 50)
    assert disc.alpha[25, 25] == 1.0 and disc.alpha[0, 0] == 0.0
    assert 0 < disc.alpha[25, 2] < 1  # feathered rim
    x0, y0, x1, y1 = disc.lesion_box
    assert 0 <= x0 < x1 <= 50 and (x1 - x0) < 45  # the lesion is smaller than the disc: skin around it
    canvas = np.full((100, 100, 3), 60.0, np.float32)  # dark skin
    box = screen_sources.paste_disc(canvas, disc, 50, 50, match=0.0)
    assert canvas[50, 50].mean() < 120 and canvas[50, 27 + 1].mean() > 150  # lesion dark, its own light skin kept
    assert box[0] >= 25 and box[2] <= 75


def test_the_phone_way_loses_detail_but_not_size():
    rng = np.random.default_rng(0)
    photo = (rng.random((240, 320, 3)) * 255).astype(np.uint8)
    degraded = screen_sources.phone_degrade(photo, rng)
    assert degraded.shape == photo.shape
    sharpness = lambda a: cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()  # noqa: E731
    assert sharpness(degraded) < 0.1 * sharpness(photo)


def test_a_mask_is_estimated_for_a_close_up_and_refused_for_a_strip():
    rgb, mask = dermoscopic_like()
    estimated = screen_sources.estimate_mask(rgb)
    overlap = ((estimated > 0) & (mask > 0)).sum() / ((estimated > 0) | (mask > 0)).sum()
    assert overlap > 0.85
    strip = np.full((150, 200, 3), 210, np.uint8)
    strip[:, 90:110] = 60  # the gap between two legs: dark, long, touching the borders
    assert not screen_sources.estimate_mask(strip).any()


def records_grid():
    return [{"source": s, "way": w, "patient": f"{s}-{w}-{i}"}
            for s in screen_sources.SOURCES for w in screen_sources.WAYS for i in range(2)]


@pytest.mark.parametrize("source", screen_sources.SOURCES)
@pytest.mark.parametrize("way", screen_sources.WAYS)
def test_the_split_keeps_the_held_out_source_way_and_ph2_out_of_fitting(source, way):
    records = records_grid()
    fit, test = screen_loo.loo_split(records, source, way)
    assert {(records[k]["source"], records[k]["way"]) for k in test} == {(source, way)} and len(test) == 2
    assert fit and not set(fit) & set(test)
    assert all(records[k]["source"] not in (source, "ph2") and records[k]["way"] != way for k in fit)


def test_fitting_never_reads_a_held_out_patient():
    """The held-out patients' features are NaN: any use of them in fitting a head, its threshold or the
    ugly-duckling weights would fail or give NaN figures."""
    rng = np.random.default_rng(0)
    records, rows = [], {k: [] for k in ("patient", "truth", "embedding", "descriptors", "contrast", "diameter", "p_malignant")}
    for k in range(12):
        truth = [{"box": [0, 0, 1, 1], "planted": i == 0} for i in range(4)]
        records.append({"patient": f"p{k}", "source": "a" if k < 8 else "b", "way": "mask", "skin_tone": 0.5, "lesions": truth})
        for i in range(6):  # four lesions, two non-lesions
            is_lesion = i < 4
            rows["patient"].append(k)
            rows["truth"].append(i if is_lesion else -1)
            rows["embedding"].append(rng.normal(1.0 if is_lesion else -1.0, 1.0, 8) + (3.0 if i == 0 else 0))
            rows["descriptors"].append(rng.normal(0, 1, 4))
            rows["contrast"].append(rng.uniform(4, 10))
            rows["diameter"].append(rng.uniform(20, 40))
            rows["p_malignant"].append(0.9 if i == 0 else 0.1)
    table = {k: np.array(v, dtype=float if k not in ("patient", "truth") else int) for k, v in rows.items()}
    held_out = list(range(8, 12))
    held_rows = np.isin(table["patient"], held_out)
    for key in ("embedding", "descriptors", "contrast", "diameter", "p_malignant"):
        table[key][held_rows] = np.nan
    fitted = screen_loo_fit.fit_cell(records, table, fit=list(range(8)), recipes=["emb", "emb+desc"], target_recall=0.9)
    emb_stats, desc_stats, ranker = fitted["stats"]
    assert all(np.isfinite(s).all() for s in (*emb_stats, *desc_stats, ranker.weight, ranker.space.projection))
    assert sum(fitted["weights"].values()) > 0
    scorer, threshold = fitted["heads"]["emb"]
    fit_rows = ~held_rows
    kept = scorer(table["embedding"][fit_rows]) >= threshold
    assert kept[table["truth"][fit_rows] >= 0].mean() >= 0.75 and not kept[table["truth"][fit_rows] < 0].all()


def test_an_estimated_mask_broken_into_a_scribble_is_refused_when_asked():
    rgb = np.full((150, 200, 3), 215, np.uint8)
    cv2.ellipse(rgb, (100, 75), (40, 30), 0, 30, 330, (90, 60, 50), 7)  # an open arc: a faint lesion's fragment
    assert screen_sources.estimate_mask(rgb).any()
    assert not screen_sources.estimate_mask(rgb, min_solidity=0.7).any()
