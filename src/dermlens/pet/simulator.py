"""A 2-D oncological PET simulator after Liu, Jha et al. (Phys. Med. Biol. 66:124002, 2021).

Per image: a body phantom with organs and one EFD tumour drawn on a grid ``upsample`` times finer than the
reconstruction grid; the scanner's resolution as a Gaussian blur (FWHM in mm) on that fine grid; integration over
each reconstruction pixel (block mean: the partial-volume effect); then Poisson counts at the image's dose, either
directly in image space or on a sinogram reconstructed with OSEM. The truth is the tumour fraction of every
reconstruction pixel: the block mean of the fine tumour mask.

Every image is drawn from its own generator seeded by ``(seed, index)``, so image ``i`` of a dataset does not
depend on how many images the dataset holds.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import numpy as np

from dermlens.pet import scanner
from dermlens.pet.phantom import body_background, place_tumour
from dermlens.segment.targets import block_fraction


@dataclass(frozen=True)
class SimulatorConfig:
    grid: int = 64  # reconstruction grid (pixels per side)
    pixel_mm: float = 4.0  # reconstruction pixel size
    upsample: int = 8  # fine grid = grid * upsample; phantoms and the truth are drawn there
    psf_oversample: int = 2  # the blur is computed on a grid this many times finer than the reconstruction grid
    fwhm_mm: float = 6.0  # scanner resolution (Gaussian point-spread function)
    dose_range: tuple[float, float] = (2e4, 5e5)  # detected counts per slice, drawn log-uniformly per image
    tbr_range: tuple[float, float] = (2.0, 8.0)  # tumour-to-background uptake ratio, uniform
    diameter_mm_range: tuple[float, float] = (6.0, 40.0)  # tumour equivalent diameter, log-uniform
    harmonics: int = 4  # elliptic Fourier harmonics of the tumour outline
    irregularity: float = 0.25  # amplitude of the higher harmonics (relative, falls as 1/n^2)
    heterogeneity: float = 0.25  # s.d. of the uptake pattern inside the tumour (relative)
    texture: float = 0.12  # s.d. of the smooth multiplicative texture of the background
    reconstruction: bool = True  # project, count on the sinogram and reconstruct with OSEM; else count per pixel
    n_angles: int = 64
    osem_iterations: int = 4
    osem_subsets: int = 8
    postfilter_fwhm_mm: float = 0.0  # Gaussian post-reconstruction filter (0 = none)

    def __post_init__(self):
        if self.grid < 8 or self.upsample < 1 or self.pixel_mm <= 0 or self.fwhm_mm < 0:
            raise ValueError(f"SimulatorConfig: implausible geometry {self}")
        if self.psf_oversample < 1 or self.upsample % self.psf_oversample:
            raise ValueError(f"SimulatorConfig: upsample {self.upsample} must be a multiple of psf_oversample "
                             f"{self.psf_oversample}")
        for name in ("dose_range", "tbr_range", "diameter_mm_range"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"SimulatorConfig.{name} must be 0 < low <= high, got {(low, high)}")
        if self.reconstruction and self.n_angles % self.osem_subsets:
            raise ValueError(f"n_angles {self.n_angles} must be a multiple of osem_subsets {self.osem_subsets}")

    @property
    def fine_pixel_mm(self) -> float:
        return self.pixel_mm / self.upsample

    @property
    def fov_mm(self) -> float:
        return self.grid * self.pixel_mm

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "SimulatorConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"SimulatorConfig: unknown fields {sorted(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**values)


@dataclass
class SimulatedImage:
    image: np.ndarray  # (grid, grid) float32, activity in background units (soft tissue about 1)
    fraction: np.ndarray  # (grid, grid) float32, true tumour fraction of each pixel
    ideal: np.ndarray  # (grid, grid) the noise-free blurred and pixelised activity
    meta: dict


@lru_cache(maxsize=4)
def _fine_coordinates(grid: int, upsample: int, pixel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    fine = grid * upsample
    step = pixel_mm / upsample
    axis = (np.arange(fine) - (fine - 1) / 2.0) * step
    x, y = np.meshgrid(axis, -axis)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def draw_phantom(cfg: SimulatorConfig, seed: int, index: int) -> tuple[np.random.Generator, dict]:
    """Phantom, tumour and noise-free scanner image of one index; the generator is returned for the noise."""
    rng = np.random.default_rng([seed, index])
    x, y = _fine_coordinates(cfg.grid, cfg.upsample, cfg.pixel_mm)
    # Organs are drawn at half the fine resolution (their edges are not the truth, and the blur hides the
    # difference), which halves the cost of a phantom; the tumour is drawn at full resolution.
    half = 2 if cfg.upsample % 2 == 0 else 1
    xh, yh = _fine_coordinates(cfg.grid, cfg.upsample // half, cfg.pixel_mm)
    background, body = body_background(rng, xh, yh, cfg.fov_mm, cfg.texture)
    if half > 1:
        background = np.repeat(np.repeat(background, half, axis=0), half, axis=1)
        body = np.repeat(np.repeat(body, half, axis=0), half, axis=1)
    diameter = _log_uniform(rng, *cfg.diameter_mm_range)
    tbr = float(rng.uniform(*cfg.tbr_range))
    tumour = place_tumour(rng, x, y, background, body, diameter, tbr, cfg.harmonics, cfg.irregularity,
                          cfg.heterogeneity)
    activity = np.where(tumour.mask, tumour.uptake, background)
    # Blur then average over each reconstruction pixel. The blur runs on an intermediate grid psf_oversample
    # times finer than the reconstruction grid (the activity averaged onto it first): averaging and blurring
    # commute up to the Gaussian's discretisation, and the FFT is (upsample / psf_oversample)^2 times cheaper.
    step = cfg.upsample // cfg.psf_oversample
    blurred = scanner.psf_blur(block_fraction(activity, step), cfg.fwhm_mm / (cfg.pixel_mm / cfg.psf_oversample))
    return rng, {
        "ideal": block_fraction(blurred, cfg.psf_oversample),  # mean activity over each reconstruction pixel
        "fraction": block_fraction(tumour.mask, cfg.upsample),
        "in_body": block_fraction(body, cfg.upsample) > 0.5,
        "dose": _log_uniform(rng, *cfg.dose_range),
        "tumour": tumour,
    }


def simulate_images(cfg: SimulatorConfig, seed: int, indices) -> list[SimulatedImage]:
    """Images ``indices`` of the dataset with this seed (reconstructed together: OSEM runs on the whole batch)."""
    drawn = [draw_phantom(cfg, seed, int(i)) for i in indices]
    if cfg.reconstruction:
        counts, scales = [], []
        for rng, d in drawn:
            c, scale = scanner.poisson_counts(scanner.project(d["ideal"], cfg.n_angles), d["dose"], rng)
            counts.append(c)
            scales.append(scale)
        recon = scanner.osem(np.stack(counts), cfg.grid, cfg.osem_iterations, cfg.osem_subsets)
        images = [r / s for r, s in zip(recon, scales)]
    else:
        images = []
        for rng, d in drawn:
            c, scale = scanner.poisson_counts(d["ideal"], d["dose"], rng)
            images.append(c / scale)
    out = []
    for index, (_, d), image in zip(indices, drawn, images):
        if cfg.postfilter_fwhm_mm > 0:
            image = scanner.psf_blur(image, cfg.postfilter_fwhm_mm / cfg.pixel_mm)
        ideal, in_body, tumour = d["ideal"], d["in_body"], d["tumour"]
        meta = {
            "index": int(index),
            "diameter_mm": round(tumour.diameter_mm, 3),
            "diameter_over_fwhm": round(tumour.diameter_mm / cfg.fwhm_mm, 4) if cfg.fwhm_mm > 0 else None,
            "tumour_area_px": round(float(d["fraction"].sum()), 4),
            "tbr": round(tumour.tbr, 4),
            "dose": round(d["dose"], 1),
            "relative_noise": round(float((image - ideal)[in_body].std() / ideal[in_body].mean()), 4),
            "centre_mm": [round(c, 2) for c in tumour.centre_mm],
        }
        out.append(SimulatedImage(image.astype(np.float32), d["fraction"].astype(np.float32),
                                  ideal.astype(np.float32), meta))
    return out


def simulate_image(cfg: SimulatorConfig, seed: int, index: int) -> SimulatedImage:
    return simulate_images(cfg, seed, [index])[0]
