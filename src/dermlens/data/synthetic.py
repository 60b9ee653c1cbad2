"""A small, embedded, SYNTHETIC skin-lesion dataset.

The rest of the test suite (and anyone without access to real data) needs images whose classes differ the way real
lesion classes do, so that a model has something to learn. This module draws them with numpy and Pillow from a seed:
no downloads, no real patients.

The five classes are real taxonomy node ids and are drawn after the dermoscopic ABCD cues (asymmetry, border,
colour, diameter) and each class's hallmark structure:

- ``melanoma``: large, asymmetric, irregular border, several colours (light and dark brown plus black, blue-grey,
  sometimes white regression or red), peripheral dark globules.
- ``melanocytic_nevus``: small to medium, round and symmetric, smooth border, one uniform brown, faint network.
- ``seborrheic_keratosis``: waxy tan-brown, sharply demarcated "stuck-on" plaque with cerebriform fissures,
  milia-like cysts (white-yellow dots) and comedo-like openings (dark dots).
- ``basal_cell_carcinoma``: pink, pearly, translucent, with a brighter rolled rim, arborizing red vessels,
  sometimes blue-grey ovoid nests or a central crust.
- ``dermatofibroma``: small, soft-edged, central white scar-like patch with a faint brown peripheral ring.

The classes overlap on purpose (sizes and colours are drawn from overlapping ranges, every class has some
atypical draws) so the task is learnable but not trivial. Skin tone, lighting, noise and hair are drawn
independently of the class, so they carry no label information.

A "lesion" (group) is drawn once and photographed 2-3 times with small changes of position, rotation, scale,
lighting, noise and hair, so that group-aware splits are meaningful.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "SYNTHETIC_CLASSES",
    "GENERATOR_VERSION",
    "make_synthetic_dataset",
    "render_lesion",
]

SYNTHETIC_CLASSES: tuple[str, ...] = (
    "melanoma",
    "melanocytic_nevus",
    "seborrheic_keratosis",
    "basal_cell_carcinoma",
    "dermatofibroma",
)

# Bumped whenever the drawing changes, so that a stored dataset says which generator made it.
GENERATOR_VERSION = "1"

_README = """\
SYNTHETIC DATA - NOT REAL PATIENTS
==================================

Every image in this folder is SYNTHETIC. It was drawn by a program (dermlens.data.synthetic, generator
version {version}) from random numbers. No image shows a real person, a real lesion or a real diagnosis.

Use it only to test software and to check that training code can learn something. Do not use it to judge
how well a model works on real skin, and never for any clinical purpose.

Contents
--------
images/<label>/<name>.{ext}   the images ({n_images} in total, {size}x{size} pixels)
labels.csv                    columns path,label,group,synthetic
                              path:      relative to this folder
                              label:     taxonomy node id ({labels})
                              group:     a synthetic "lesion id"; images of one group are the same drawn lesion
                                         photographed again with small changes. Split by group.
                              synthetic: always "true"

Generated with: seed={seed}, n_per_class={n_per_class}, n_groups_per_class={n_groups}, size={size}.
The same arguments give the same files.
"""


# --------------------------------------------------------------------------------------------------------------
# Colours (RGB in [0, 1])
# --------------------------------------------------------------------------------------------------------------

# Skin tones from very light to dark; a tone is interpolated between neighbours.
_SKIN_TONES = np.array(
    [
        [0.97, 0.86, 0.79],
        [0.92, 0.76, 0.66],
        [0.80, 0.60, 0.47],
        [0.62, 0.43, 0.31],
        [0.42, 0.28, 0.20],
    ]
)

# Melanin absorbs: brown pigment multiplies the skin colour by a transmittance.
_LIGHT_BROWN = np.array([0.72, 0.55, 0.42])
_MID_BROWN = np.array([0.55, 0.38, 0.27])
_DARK_BROWN = np.array([0.36, 0.23, 0.16])
_BLACK = np.array([0.13, 0.10, 0.10])
# Structures that are seen as colours of their own (dermal melanin, scar, blood, keratin).
_BLUE_GREY = np.array([0.42, 0.47, 0.58])
_REGRESSION_WHITE = np.array([0.90, 0.87, 0.86])
_SCAR_WHITE = np.array([0.95, 0.92, 0.90])
_PEARLY_PINK = np.array([0.94, 0.68, 0.68])
_VESSEL_RED = np.array([0.72, 0.10, 0.14])
_MILIA = np.array([0.97, 0.94, 0.80])
_CRUST = np.array([0.40, 0.16, 0.12])
_HAIR = np.array([0.12, 0.09, 0.07])


# --------------------------------------------------------------------------------------------------------------
# What is drawn: a lesion (fixed for a group) and a view of it (changes per image)
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Lesion:
    label: str
    skin: np.ndarray  # base skin colour
    radius: float  # mean radius as a fraction of the image side
    aspect: float  # >= 1, elongation
    harmonics: np.ndarray  # (n, 3): k, amplitude, phase of the border
    softness: float  # edge blur, in units of the radius
    opacity: float  # how strongly the lesion colour covers the skin
    grids: dict[str, np.ndarray] = field(default_factory=dict)  # random grids for smooth noise, lesion frame
    colours: list[np.ndarray] = field(default_factory=list)
    absorbing: list[bool] = field(default_factory=list)  # pigment that multiplies the skin, or a colour that covers
    colour_grids: list[np.ndarray] = field(default_factory=list)  # melanoma: one noise field per colour
    biases: list[float] = field(default_factory=list)
    dots: dict[str, np.ndarray] = field(default_factory=dict)  # (n, 3): x, y, radius, lesion frame
    vessels: list[np.ndarray] = field(default_factory=list)  # polylines (n, 2) and widths, lesion frame
    vessel_widths: list[float] = field(default_factory=list)
    params: dict[str, float] = field(default_factory=dict)
    hairy: bool = False


@dataclass
class _View:
    centre: np.ndarray  # (2,), fraction of the image side from the image centre
    angle: float
    scale: float
    brightness: float
    colour_cast: np.ndarray  # (3,)
    vignette: float
    noise: float


def _skin_colour(rng: np.random.Generator) -> np.ndarray:
    position = rng.uniform(0.0, len(_SKIN_TONES) - 1.0)
    low = int(math.floor(position))
    high = min(low + 1, len(_SKIN_TONES) - 1)
    mix = position - low
    tone = (1 - mix) * _SKIN_TONES[low] + mix * _SKIN_TONES[high]
    # Redness and yellowness vary between people too.
    tone = tone + np.array([rng.normal(0, 0.02), rng.normal(0, 0.015), rng.normal(0, 0.02)])
    return np.clip(tone, 0.05, 1.0)


def _harmonics(rng: np.random.Generator, low: tuple[float, float], high: tuple[float, float]) -> np.ndarray:
    """Border as a sum of cosines: k=1..3 make it asymmetric or lobed, k=5..14 make it ragged."""
    rows = []
    for k in (1, 2, 3):
        rows.append((k, rng.uniform(*low) / k**0.3, rng.uniform(0, 2 * math.pi)))
    for k in rng.choice(np.arange(5, 15), size=4, replace=False):
        rows.append((float(k), rng.uniform(*high), rng.uniform(0, 2 * math.pi)))
    return np.array(rows, dtype=np.float64)


def _random_dots(
    rng: np.random.Generator, count: int, radius: tuple[float, float], spread: float, ring: tuple[float, float] = (0, 1)
) -> np.ndarray:
    """Dots placed at a fraction ``ring`` of the lesion radius, ``spread`` times the radius at most."""
    distance = spread * np.sqrt(rng.uniform(ring[0] ** 2, ring[1] ** 2, count))
    angle = rng.uniform(0, 2 * math.pi, count)
    return np.stack([distance * np.cos(angle), distance * np.sin(angle), rng.uniform(*radius, count)], axis=1)


def _arborizing_vessels(rng: np.random.Generator, trees: int) -> tuple[list[np.ndarray], list[float]]:
    """Branching red lines: a trunk that forks into thinner and thinner branches (lesion frame)."""
    lines: list[np.ndarray] = []
    widths: list[float] = []

    def grow(start: np.ndarray, heading: float, length: float, width: float, depth: int) -> None:
        points = [start]
        steps = 5
        for _ in range(steps):
            heading += rng.normal(0, 0.35)
            points.append(points[-1] + (length / steps) * np.array([math.cos(heading), math.sin(heading)]))
        lines.append(np.array(points))
        widths.append(width)
        if depth == 0:
            return
        for _ in range(int(rng.integers(2, 4))):
            branch_at = points[int(rng.integers(2, steps + 1))]
            grow(branch_at, heading + rng.uniform(-1.1, 1.1), length * rng.uniform(0.45, 0.7), width * 0.6, depth - 1)

    for _ in range(trees):
        angle = rng.uniform(0, 2 * math.pi)
        start = rng.uniform(0.3, 0.8) * np.array([math.cos(angle), math.sin(angle)])
        heading = angle + math.pi + rng.normal(0, 0.6)  # grow inwards, across the lesion
        grow(start, heading, rng.uniform(0.5, 1.0), rng.uniform(0.035, 0.07), depth=2)
    return lines, widths


def _sample_lesion(label: str, rng: np.random.Generator) -> _Lesion:
    """Draw everything that stays the same when one lesion is photographed again."""
    if label not in SYNTHETIC_CLASSES:
        raise ValueError(f"unknown synthetic class {label!r}; choose one of {', '.join(SYNTHETIC_CLASSES)}")
    skin = _skin_colour(rng)
    hairy = bool(rng.random() < 0.3)
    # An "atypical" draw borrows the look of a neighbouring class for shape or size: the overlap real data has.
    atypical = bool(rng.random() < 0.15)

    if label == "melanoma":
        lesion = _Lesion(
            label,
            skin,
            radius=rng.uniform(0.14, 0.34) if atypical else rng.uniform(0.19, 0.38),
            aspect=rng.uniform(1.0, 1.5),
            harmonics=_harmonics(rng, (0.03, 0.12) if atypical else (0.08, 0.24), (0.015, 0.06)),
            softness=rng.uniform(0.02, 0.06),
            opacity=rng.uniform(0.85, 1.0),
            hairy=hairy,
        )
        # Several colours in patches: two browns always, then some of black, blue-grey, white, red.
        extras = [("black", _BLACK, 0.6), ("blue_grey", _BLUE_GREY, 0.55), ("white", _REGRESSION_WHITE, 0.3)]
        extras.append(("red", _PEARLY_PINK, 0.15))
        chosen = [("light", _LIGHT_BROWN), ("dark", _DARK_BROWN)]
        chosen += [(name, colour) for name, colour, chance in extras if rng.random() < chance]
        for name, colour in chosen:
            lesion.colour_grids.append(rng.standard_normal((7, 7)))
            lesion.colours.append(colour * rng.uniform(0.9, 1.1, 3))
            lesion.absorbing.append(name in ("light", "dark", "black"))
            lesion.biases.append(0.0 if name in ("light", "dark") else rng.uniform(-0.9, -0.1))
        lesion.dots["globules"] = _random_dots(
            rng, int(rng.integers(0, 14)), (0.03, 0.07), 1.0, ring=(0.6, 1.0)
        )
        return lesion

    if label == "melanocytic_nevus":
        lesion = _Lesion(
            label,
            skin,
            radius=rng.uniform(0.14, 0.3) if atypical else rng.uniform(0.1, 0.26),
            aspect=rng.uniform(1.0, 1.25),
            harmonics=_harmonics(rng, (0.0, 0.08) if atypical else (0.0, 0.035), (0.0, 0.008)),
            softness=rng.uniform(0.05, 0.12),
            opacity=rng.uniform(0.85, 1.0),
            hairy=hairy,
        )
        shade = rng.uniform(0.0, 1.0)
        brown = (1 - shade) * _LIGHT_BROWN + shade * (_DARK_BROWN if atypical else _MID_BROWN)
        lesion.colours = [brown * rng.uniform(0.95, 1.05, 3)]
        lesion.params.update(
            centre_shift=rng.uniform(-0.15, 0.15),  # centre a bit darker or lighter than the rim
            network=rng.uniform(0.0, 0.08),
            network_frequency=rng.uniform(18, 28),
        )
        lesion.grids["mottle"] = rng.standard_normal((6, 6))
        return lesion

    if label == "seborrheic_keratosis":
        lesion = _Lesion(
            label,
            skin,
            radius=rng.uniform(0.14, 0.34),
            aspect=rng.uniform(1.0, 1.6),
            harmonics=_harmonics(rng, (0.02, 0.1), (0.005, 0.025)),
            softness=rng.uniform(0.012, 0.035),  # sharply demarcated: "stuck on"
            opacity=rng.uniform(0.9, 1.0),
            hairy=hairy,
        )
        shade = rng.uniform(0.0, 1.0) if not atypical else rng.uniform(0.8, 1.3)
        waxy = (1 - shade) * np.array([0.80, 0.66, 0.48]) + shade * np.array([0.52, 0.38, 0.26])
        lesion.colours = [np.clip(waxy * rng.uniform(0.93, 1.07, 3), 0, 1)]
        lesion.grids["fissures"] = rng.standard_normal((10, 10))
        lesion.grids["mottle"] = rng.standard_normal((6, 6))
        lesion.params["fissure_depth"] = rng.uniform(0.1, 0.3)
        few = 3 if atypical else 14
        lesion.dots["milia"] = _random_dots(rng, int(rng.integers(0, few + 1)), (0.03, 0.06), 0.85)
        lesion.dots["comedos"] = _random_dots(rng, int(rng.integers(0, few)), (0.03, 0.055), 0.85)
        return lesion

    if label == "basal_cell_carcinoma":
        lesion = _Lesion(
            label,
            skin,
            radius=rng.uniform(0.13, 0.32),
            aspect=rng.uniform(1.0, 1.4),
            harmonics=_harmonics(rng, (0.02, 0.12), (0.0, 0.02)),
            softness=rng.uniform(0.05, 0.12),
            opacity=rng.uniform(0.6, 0.85),  # translucent
            hairy=hairy,
        )
        lesion.colours = [np.clip(_PEARLY_PINK * rng.uniform(0.92, 1.05, 3), 0, 1)]
        lesion.grids["mottle"] = rng.standard_normal((6, 6))
        lesion.params.update(rim=rng.uniform(0.08, 0.2))
        trees = int(rng.integers(0, 2)) if atypical else int(rng.integers(1, 4))
        lesion.vessels, lesion.vessel_widths = _arborizing_vessels(rng, trees)
        # Pigmented BCC: blue-grey ovoid nests, a look it shares with melanoma.
        nests = int(rng.integers(2, 7)) if rng.random() < (0.6 if atypical else 0.2) else 0
        lesion.dots["nests"] = _random_dots(rng, nests, (0.06, 0.13), 0.8)
        lesion.params["crust"] = rng.uniform(0.15, 0.35) if rng.random() < 0.25 else 0.0
        return lesion

    # dermatofibroma
    lesion = _Lesion(
        label,
        skin,
        radius=rng.uniform(0.12, 0.26) if atypical else rng.uniform(0.08, 0.2),
        aspect=rng.uniform(1.0, 1.3),
        harmonics=_harmonics(rng, (0.0, 0.06), (0.0, 0.015)),
        softness=rng.uniform(0.1, 0.2),
        opacity=rng.uniform(0.75, 0.95),
        hairy=hairy,
    )
    lesion.colours = [(_LIGHT_BROWN * 0.6 + _MID_BROWN * 0.4) * rng.uniform(0.93, 1.07, 3)]
    lesion.grids["patch"] = rng.standard_normal((6, 6))
    lesion.params.update(
        patch_size=rng.uniform(0.3, 0.55),
        patch_strength=rng.uniform(0.45, 0.85) if not atypical else rng.uniform(0.15, 0.4),
        ring_strength=rng.uniform(0.5, 0.9),
        pink=rng.uniform(0.0, 0.3),
    )
    return lesion


def _sample_view(rng: np.random.Generator, base: _View | None = None) -> _View:
    """A new photograph: of a fresh lesion (``base`` None) or of the same lesion again (small changes)."""
    if base is None:
        return _View(
            centre=rng.normal(0, 0.04, 2),
            angle=rng.uniform(0, 2 * math.pi),
            scale=1.0,
            brightness=rng.uniform(0.9, 1.08),
            colour_cast=rng.normal(1.0, 0.025, 3),
            vignette=rng.uniform(0.0, 0.25),
            noise=rng.uniform(0.008, 0.03),
        )
    return _View(
        centre=base.centre + rng.normal(0, 0.025, 2),
        angle=base.angle + rng.uniform(-0.35, 0.35),
        scale=rng.uniform(0.92, 1.08),
        brightness=base.brightness * rng.uniform(0.96, 1.04),
        colour_cast=base.colour_cast * rng.normal(1.0, 0.01, 3),
        vignette=float(np.clip(base.vignette + rng.normal(0, 0.04), 0, 0.3)),
        noise=rng.uniform(0.008, 0.03),
    )


# --------------------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------------------


def _smooth_noise(grid: np.ndarray, x: np.ndarray, y: np.ndarray, extent: float = 1.6) -> np.ndarray:
    """Smoothly interpolated value noise, defined in the lesion frame so it moves with the lesion."""
    cells = grid.shape[0] - 1
    gx = np.clip((x / extent * 0.5 + 0.5) * cells, 0, cells - 1e-6)
    gy = np.clip((y / extent * 0.5 + 0.5) * cells, 0, cells - 1e-6)
    x0 = gx.astype(np.int64)
    y0 = gy.astype(np.int64)
    fx = gx - x0
    fy = gy - y0
    fx = fx * fx * (3 - 2 * fx)
    fy = fy * fy * (3 - 2 * fy)
    top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
    bottom = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _dot_field(dots: np.ndarray, x: np.ndarray, y: np.ndarray, softness: float = 0.35) -> np.ndarray:
    """Coverage in [0, 1] of a set of soft round dots (lesion frame)."""
    if len(dots) == 0:
        return np.zeros_like(x)
    dx = x[None] - dots[:, 0, None, None]
    dy = y[None] - dots[:, 1, None, None]
    radius = dots[:, 2, None, None]
    distance = np.sqrt(dx * dx + dy * dy) / radius
    coverage = np.clip((1.0 + softness - distance) / (2 * softness), 0, 1)
    return coverage.max(axis=0)


def _line_mask(size: int, polylines: list[np.ndarray], widths: list[float]) -> np.ndarray:
    """Anti-aliased mask of polylines given in pixel coordinates (drawn at 2x, then averaged down)."""
    factor = 2
    canvas = Image.new("L", (size * factor, size * factor), 0)
    draw = ImageDraw.Draw(canvas)
    for points, width in zip(polylines, widths, strict=True):
        scaled = [(float(px) * factor, float(py) * factor) for px, py in points]
        draw.line(scaled, fill=255, width=max(1, int(round(width * factor))), joint="curve")
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _to_pixels(points: np.ndarray, lesion: _Lesion, view: _View, size: int) -> np.ndarray:
    """Lesion frame (units of the radius) -> pixel coordinates of this view."""
    cos, sin = math.cos(view.angle), math.sin(view.angle)
    scale = lesion.radius * view.scale
    px = view.centre[0] + scale * (cos * points[:, 0] - sin * points[:, 1])
    py = view.centre[1] + scale * (sin * points[:, 0] + cos * points[:, 1])
    return np.stack([(px + 0.5) * size, (py + 0.5) * size], axis=1)


def _hair_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    strands = int(rng.integers(1, 7))
    lines = []
    widths = []
    for _ in range(strands):
        start = rng.uniform(-0.1, 1.1, 2) * size
        heading = rng.uniform(0, 2 * math.pi)
        length = rng.uniform(0.4, 1.2) * size
        bend = rng.normal(0, 0.6)
        t = np.linspace(0, 1, 12)[:, None]
        direction = np.array([math.cos(heading), math.sin(heading)])
        normal = np.array([-direction[1], direction[0]])
        points = start + length * t * direction + bend * length * (t * (1 - t)) * normal
        lines.append(points)
        widths.append(rng.uniform(0.6, 1.4) * size / 128)
    return _line_mask(size, lines, widths)


def _render(lesion: _Lesion, view: _View, rng: np.random.Generator, size: int) -> Image.Image:
    # Pixel centres in units of the image side, origin at the image centre.
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size - 0.5
    px, py = np.meshgrid(coords, coords)

    # Lesion frame: undo position, rotation and scale; units of the lesion radius.
    cos, sin = math.cos(view.angle), math.sin(view.angle)
    dx = px - view.centre[0]
    dy = py - view.centre[1]
    scale = lesion.radius * view.scale
    x = (cos * dx + sin * dy) / scale
    y = (-sin * dx + cos * dy) / scale

    # Border: an ellipse whose radius varies with angle.
    stretch = math.sqrt(lesion.aspect)
    ex, ey = x / stretch, y * stretch
    rho = np.sqrt(ex * ex + ey * ey)
    phi = np.arctan2(ey, ex)
    border = np.ones_like(phi)
    for k, amplitude, phase in lesion.harmonics:
        border += amplitude * np.cos(k * phi + phase)
    border = np.maximum(border, 0.35)
    t = rho / border  # 0 at the centre, 1 on the border
    alpha = 1.0 / (1.0 + np.exp(-np.clip((border - rho) / lesion.softness, -30, 30)))

    # Background skin with gentle uneven tone.
    skin = lesion.skin[None, None, :] * (
        1.0 + 0.04 * _smooth_noise(rng.standard_normal((5, 5)), px, py, extent=0.5)[..., None]
    )

    colour = _lesion_colour(lesion, skin, x, y, t, alpha, view, size)
    image = skin * (1 - lesion.opacity * alpha[..., None]) + colour * (lesion.opacity * alpha[..., None])

    if lesion.hairy:
        hair = _hair_mask(rng, size)[..., None]
        image = image * (1 - hair) + _HAIR * rng.uniform(0.7, 1.3) * hair

    # Camera: brightness, colour cast, vignette, sensor noise.
    radial = np.sqrt(px * px + py * py) / math.sqrt(0.5)
    image = image * view.brightness * view.colour_cast[None, None, :]
    image = image * (1 - view.vignette * radial[..., None] ** 2)
    image = image + rng.normal(0, view.noise, image.shape)
    return Image.fromarray(np.clip(np.rint(image * 255), 0, 255).astype(np.uint8))


def _lesion_colour(
    lesion: _Lesion,
    skin: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    alpha: np.ndarray,
    view: _View,
    size: int,
) -> np.ndarray:
    label = lesion.label
    if label == "melanoma":
        # Patches of colour: each colour has its own noise field; the strongest field wins, with soft seams.
        fields = np.stack(
            [_smooth_noise(grid, x, y) + bias for grid, bias in zip(lesion.colour_grids, lesion.biases, strict=True)]
        )
        weights = np.exp(3.5 * (fields - fields.max(axis=0, keepdims=True)))
        weights /= weights.sum(axis=0, keepdims=True)
        layers = [
            skin * colour if absorbing else np.broadcast_to(colour, skin.shape)
            for colour, absorbing in zip(lesion.colours, lesion.absorbing, strict=True)
        ]
        colour_map = np.einsum("khw,khwc->hwc", weights, np.stack(layers))
        globules = _dot_field(lesion.dots["globules"], x, y)[..., None]
        return colour_map * (1 - globules) + skin * _BLACK * 1.5 * globules

    if label == "melanocytic_nevus":
        brown = lesion.colours[0]
        centre = 1.0 - lesion.params["centre_shift"] * (1 - np.clip(t, 0, 1))
        frequency = lesion.params["network_frequency"]
        network = 1.0 - lesion.params["network"] * (np.sin(frequency * x) * np.sin(frequency * y) > 0.2)
        mottle = 1.0 + 0.04 * _smooth_noise(lesion.grids["mottle"], x, y)
        return skin * brown * (centre * network * mottle)[..., None]

    if label == "seborrheic_keratosis":
        waxy = np.broadcast_to(lesion.colours[0], skin.shape) * (0.55 + 0.45 * skin / skin.max())
        # Cerebriform surface: shallow furrows along the level lines of a noise field.
        ridges = np.abs(np.sin(4.0 * _smooth_noise(lesion.grids["fissures"], x, y, extent=1.4)))
        fissure = 1.0 - lesion.params["fissure_depth"] * np.exp(-((ridges / 0.55) ** 2))
        mottle = 1.0 + 0.06 * _smooth_noise(lesion.grids["mottle"], x, y)
        colour = waxy * (fissure * mottle)[..., None]
        milia = _dot_field(lesion.dots["milia"], x, y)[..., None]
        comedos = _dot_field(lesion.dots["comedos"], x, y)[..., None]
        colour = colour * (1 - milia) + _MILIA * milia
        return colour * (1 - comedos) + _DARK_BROWN * 0.45 * comedos

    if label == "basal_cell_carcinoma":
        pink = np.broadcast_to(lesion.colours[0], skin.shape)
        # Translucent: some of the skin shows through; a pearly, brighter rolled rim.
        base = 0.75 * pink + 0.25 * skin
        rim = lesion.params["rim"] * np.exp(-(((t - 0.85) / 0.12) ** 2))
        base = base + rim[..., None] * (1.0 - base)
        base = base * (1.0 + 0.04 * _smooth_noise(lesion.grids["mottle"], x, y))[..., None]
        nests = _dot_field(lesion.dots["nests"], x, y, softness=0.5)[..., None]
        base = base * (1 - 0.85 * nests) + _BLUE_GREY * 0.85 * nests
        if lesion.params["crust"] > 0:
            crust = np.clip((lesion.params["crust"] - t) / 0.08, 0, 1)[..., None]
            base = base * (1 - crust) + _CRUST * crust
        if lesion.vessels:
            lines = [_to_pixels(points, lesion, view, size) for points in lesion.vessels]
            widths = [w * lesion.radius * view.scale * size for w in lesion.vessel_widths]
            vessels = (_line_mask(size, lines, widths) * (alpha > 0.5))[..., None]
            base = base * (1 - 0.9 * vessels) + _VESSEL_RED * 0.9 * vessels
        return base

    # dermatofibroma: faint brown ring, white centre with an irregular outline, a little pink.
    ring = lesion.params["ring_strength"] * np.clip((t - 0.25) / 0.4, 0, 1)
    brown = skin * (1 - ring[..., None] * (1 - lesion.colours[0]))
    pink = lesion.params["pink"]
    brown = brown * (1 - pink * 0.3) + _PEARLY_PINK * skin.max() * pink * 0.3
    outline = lesion.params["patch_size"] * (1.0 + 0.3 * _smooth_noise(lesion.grids["patch"], x, y))
    patch = lesion.params["patch_strength"] * np.clip((outline - t) / 0.25, 0, 1)[..., None]
    return brown * (1 - patch) + _SCAR_WHITE * patch


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


def render_lesion(label: str, rng: np.random.Generator, size: int = 128) -> Image.Image:
    """Draw one synthetic lesion image of class ``label`` (one of :data:`SYNTHETIC_CLASSES`) as an RGB image.

    Everything random comes from ``rng``, so the same generator state gives the same image.
    """
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    lesion = _sample_lesion(label, rng)
    return _render(lesion, _sample_view(rng), rng, size)


def _group_sizes(n_per_class: int, n_groups: int) -> list[int]:
    base, extra = divmod(n_per_class, n_groups)
    return [base + 1 if index < extra else base for index in range(n_groups)]


def make_synthetic_dataset(
    out_dir: str | os.PathLike[str],
    n_per_class: int = 60,
    size: int = 128,
    seed: int = 0,
    n_groups_per_class: int | None = None,
    *,
    image_format: str = "png",
) -> Path:
    """Write a synthetic dataset and return the path of its ``labels.csv``.

    Layout: ``out_dir/images/<label>/<name>.png`` (or ``.jpg`` with ``image_format="jpeg"``, quality 92),
    ``out_dir/labels.csv`` with columns ``path,label,group,synthetic`` (path relative to ``out_dir``, with "/"),
    and ``out_dir/README.txt`` which says the data is synthetic.

    Each class has ``n_groups_per_class`` lesions (default: about one per 2.5 images, so groups hold 2-3 images),
    each photographed one or more times. The same arguments give byte-identical files. Files of an earlier run
    with other arguments are not deleted; ``labels.csv`` lists exactly the images of this run.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if n_groups_per_class is None:
        n_groups_per_class = max(1, round(n_per_class / 2.5))
    if not 1 <= n_groups_per_class <= n_per_class:
        raise ValueError(
            f"n_groups_per_class must be between 1 and n_per_class ({n_per_class}), got {n_groups_per_class}"
        )
    image_format = image_format.lower()
    if image_format not in ("png", "jpeg", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
    extension = "png" if image_format == "png" else "jpg"

    root = Path(out_dir)
    rows: list[tuple[str, str, str, str]] = []
    for class_index, label in enumerate(SYNTHETIC_CLASSES):
        folder = root / "images" / label
        folder.mkdir(parents=True, exist_ok=True)
        for group_index, views in enumerate(_group_sizes(n_per_class, n_groups_per_class)):
            # Seeds derive from (seed, class, group, view) so each image does not depend on how many came before.
            lesion_rng = np.random.default_rng([seed, class_index, group_index])
            lesion = _sample_lesion(label, lesion_rng)
            first_view = _sample_view(lesion_rng)
            group = f"syn{seed}-{label}-{group_index:04d}"
            for view_index in range(views):
                view_rng = np.random.default_rng([seed, class_index, group_index, view_index + 1])
                view = first_view if view_index == 0 else _sample_view(view_rng, base=first_view)
                image = _render(lesion, view, view_rng, size)
                name = f"{group}-v{view_index}.{extension}"
                if extension == "png":
                    image.save(folder / name, format="PNG")
                else:
                    image.save(folder / name, format="JPEG", quality=92)
                rows.append((f"images/{label}/{name}", label, group, "true"))

    labels_path = root / "labels.csv"
    with open(labels_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("path", "label", "group", "synthetic"))
        writer.writerows(rows)
    (root / "README.txt").write_text(
        _README.format(
            version=GENERATOR_VERSION,
            ext=extension,
            n_images=len(rows),
            size=size,
            labels=", ".join(SYNTHETIC_CLASSES),
            seed=seed,
            n_per_class=n_per_class,
            n_groups=n_groups_per_class,
        ),
        encoding="utf-8",
    )
    return labels_path
