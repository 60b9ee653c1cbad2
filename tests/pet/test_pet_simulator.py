"""The PET simulator: truth maps, scanner physics (blur, counts, projector, OSEM), determinism, datasets on disk."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from dermlens.pet import scanner
from dermlens.pet.dataset import load_dataset, simulate_dataset
from dermlens.pet.shapes import efd_contour, polygon_area, random_efd, rasterise, scaled_outline
from dermlens.pet.simulator import SimulatorConfig, draw_phantom, simulate_image, simulate_images

CFG = SimulatorConfig()
NO_RECON = replace(CFG, reconstruction=False)


@pytest.fixture(scope="module")
def samples():
    return simulate_images(CFG, seed=3, indices=range(6))


def test_fractions_are_in_unit_interval_and_sum_to_the_fine_tumour_area():
    for index in range(4):
        _, drawn = draw_phantom(CFG, seed=5, index=index)
        fraction, mask = drawn["fraction"], drawn["tumour"].mask
        assert fraction.min() >= 0.0 and fraction.max() <= 1.0
        assert fraction.sum() == pytest.approx(mask.sum() / CFG.upsample**2, abs=1e-9)
        # Partial-volume pixels exist: the outline cuts through reconstruction pixels.
        assert ((fraction > 0) & (fraction < 1)).any()


def test_meta_describes_the_tumour(samples):
    for sample in samples:
        meta = sample.meta
        area_mm2 = sample.fraction.sum() * CFG.pixel_mm**2
        assert np.pi * (meta["diameter_mm"] / 2) ** 2 == pytest.approx(area_mm2, rel=1e-3)
        assert meta["tumour_area_px"] == pytest.approx(sample.fraction.sum(), abs=1e-3)
        assert CFG.tbr_range[0] <= meta["tbr"] <= CFG.tbr_range[1]
        assert CFG.dose_range[0] <= meta["dose"] <= CFG.dose_range[1]
        assert 0.8 * CFG.diameter_mm_range[0] <= meta["diameter_mm"] <= 1.2 * CFG.diameter_mm_range[1]
        assert sample.image.shape == sample.fraction.shape == (CFG.grid, CFG.grid)
        assert sample.image.dtype == np.float32


def test_the_tumour_is_brighter_than_its_surroundings_in_the_noise_free_image(samples):
    from scipy import ndimage

    checked = 0
    for sample in samples:
        core = sample.fraction > 0.9
        if core.any():
            tumour = sample.fraction > 0
            ring = ndimage.binary_dilation(tumour, iterations=4) & ~ndimage.binary_dilation(tumour, iterations=2)
            assert sample.ideal[core].mean() > sample.ideal[ring].mean()
            checked += 1
    assert checked >= 2


def test_blur_conserves_counts_and_has_the_configured_fwhm():
    rng = np.random.default_rng(0)
    image = np.zeros((128, 128))
    image[40:90, 30:100] = rng.uniform(0, 5, size=(50, 70))
    assert scanner.psf_blur(image, 7.0).sum() == pytest.approx(image.sum(), rel=1e-9)
    point = np.zeros((129, 129))
    point[64, 64] = 1.0
    psf = scanner.psf_blur(point, 10.0)
    coords = np.arange(129) - 64
    variance = (psf.sum(axis=0) * coords**2).sum() / psf.sum()
    assert np.sqrt(variance) * scanner.FWHM_PER_SIGMA == pytest.approx(10.0, rel=0.01)


def test_poisson_counts_have_variance_equal_to_the_mean():
    expected = np.full((200, 200), 3.0)
    counts, scale = scanner.poisson_counts(expected, total_counts=expected.size * 50.0, rng=np.random.default_rng(1))
    assert scale == pytest.approx(50.0 / 3.0)
    assert counts.mean() == pytest.approx(50.0, rel=0.01)
    assert counts.var() / counts.mean() == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("cfg", [NO_RECON, CFG], ids=["image-space", "osem"])
def test_relative_noise_shrinks_as_the_dose_grows(cfg):
    noise = []
    for dose in (1e4, 1e5, 1e6):
        sample = simulate_image(replace(cfg, dose_range=(dose, dose)), seed=2, index=0)
        noise.append(sample.meta["relative_noise"])
    assert noise[0] > noise[1] > noise[2]
    if not cfg.reconstruction:  # Poisson in image space: noise / signal falls as 1/sqrt(dose)
        assert noise[0] / noise[2] == pytest.approx(10.0, rel=0.15)


def test_projector_columns_sum_to_the_number_of_angles_and_osem_recovers_a_noise_free_image():
    matrix = scanner.system_matrix(32, 16)
    np.testing.assert_allclose(np.asarray(matrix.sum(axis=0)).ravel(), 16.0)
    _, drawn = draw_phantom(replace(CFG, grid=32, pixel_mm=8.0), seed=0, index=1)
    ideal = drawn["ideal"]
    sinogram = scanner.project(ideal, 32)
    assert sinogram.sum() == pytest.approx(32 * ideal.sum(), rel=1e-9)
    recon = scanner.osem(sinogram, 32, iterations=10, subsets=4)
    assert recon.sum() == pytest.approx(ideal.sum(), rel=0.02)
    assert np.corrcoef(recon.ravel(), ideal.ravel())[0, 1] > 0.97
    batch = scanner.osem(np.stack([sinogram, 2 * sinogram]), 32, iterations=2, subsets=4)
    np.testing.assert_allclose(batch[1], 2 * batch[0], rtol=1e-9)


def test_same_seed_same_images_and_independent_of_the_batch(samples):
    again = simulate_images(CFG, seed=3, indices=[4])[0]
    np.testing.assert_array_equal(again.image, samples[4].image)
    np.testing.assert_array_equal(again.fraction, samples[4].fraction)
    assert again.meta == samples[4].meta
    other = simulate_image(CFG, seed=4, index=4)
    assert not np.array_equal(other.fraction, samples[4].fraction)


def test_efd_shapes():
    ellipse = np.array([[2.0, 0.0, 0.0, 1.0]])  # x = 2 cos t, y = sin t
    assert polygon_area(efd_contour(ellipse, 2000)) == pytest.approx(np.pi * 2.0, rel=1e-4)
    outline = scaled_outline(random_efd(np.random.default_rng(0), harmonics=4), diameter=20.0)
    assert polygon_area(outline) == pytest.approx(np.pi * 100.0, rel=1e-9)
    axis = np.arange(-15, 15, 0.05) + 0.025
    x, y = np.meshgrid(axis, axis)
    assert rasterise(outline, x, y).sum() * 0.05**2 == pytest.approx(np.pi * 100.0, rel=0.01)


def test_config_validation_and_round_trip():
    assert SimulatorConfig.from_dict(CFG.to_dict()) == CFG
    with pytest.raises(ValueError, match="dose_range"):
        SimulatorConfig(dose_range=(1e5, 1e4))
    with pytest.raises(ValueError, match="unknown fields"):
        SimulatorConfig.from_dict({"grid": 64, "colour": "red"})


def test_dataset_round_trip(tmp_path):
    small = replace(CFG, reconstruction=False)
    simulate_dataset(tmp_path / "d", 5, seed=9, cfg=small, progress=False, chunk=2)
    data = load_dataset(tmp_path / "d")
    assert data.images.shape == data.fractions.shape == (5, 64, 64) and len(data.meta) == 5
    assert data.config == small and data.seed == 9
    np.testing.assert_array_equal(data.images[3], simulate_image(small, 9, 3).image)
    with pytest.raises(FileNotFoundError, match="not a simulated PET dataset"):
        load_dataset(tmp_path)
