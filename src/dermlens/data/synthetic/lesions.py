"""What the synthetic set draws: the colours of skin and of each structure, a lesion (drawn once per group, after
its class's ABCD cues and hallmark structures) and a view of it (position, rotation, light, noise; new per image)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SYNTHETIC_CLASSES: tuple[str, ...] = (
    "melanoma",
    "melanocytic_nevus",
    "seborrheic_keratosis",
    "basal_cell_carcinoma",
    "dermatofibroma",
)


# --------------------------------------------------------------------------------------------------------------
# Colours (RGB in [0, 1])
# --------------------------------------------------------------------------------------------------------------

# Skin tones from very light to dark; a tone is interpolated between neighbours.
SKIN_TONES = np.array(
    [
        [0.97, 0.86, 0.79],
        [0.92, 0.76, 0.66],
        [0.80, 0.60, 0.47],
        [0.62, 0.43, 0.31],
        [0.42, 0.28, 0.20],
    ]
)

# Melanin absorbs: brown pigment multiplies the skin colour by a transmittance.
LIGHT_BROWN = np.array([0.72, 0.55, 0.42])
MID_BROWN = np.array([0.55, 0.38, 0.27])
DARK_BROWN = np.array([0.36, 0.23, 0.16])
BLACK = np.array([0.13, 0.10, 0.10])
# Structures that are seen as colours of their own (dermal melanin, scar, blood, keratin).
BLUE_GREY = np.array([0.42, 0.47, 0.58])
REGRESSION_WHITE = np.array([0.90, 0.87, 0.86])
SCAR_WHITE = np.array([0.95, 0.92, 0.90])
PEARLY_PINK = np.array([0.94, 0.68, 0.68])
VESSEL_RED = np.array([0.72, 0.10, 0.14])
MILIA = np.array([0.97, 0.94, 0.80])
CRUST = np.array([0.40, 0.16, 0.12])
HAIR = np.array([0.12, 0.09, 0.07])


# --------------------------------------------------------------------------------------------------------------
# What is drawn: a lesion (fixed for a group) and a view of it (changes per image)
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Lesion:
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
class View:
    centre: np.ndarray  # (2,), fraction of the image side from the image centre
    angle: float
    scale: float
    brightness: float
    colour_cast: np.ndarray  # (3,)
    vignette: float
    noise: float


def _skin_colour(rng: np.random.Generator) -> np.ndarray:
    position = rng.uniform(0.0, len(SKIN_TONES) - 1.0)
    low = int(math.floor(position))
    high = min(low + 1, len(SKIN_TONES) - 1)
    mix = position - low
    tone = (1 - mix) * SKIN_TONES[low] + mix * SKIN_TONES[high]
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


def sample_lesion(label: str, rng: np.random.Generator) -> Lesion:
    """Draw everything that stays the same when one lesion is photographed again."""
    if label not in SYNTHETIC_CLASSES:
        raise ValueError(f"unknown synthetic class {label!r}; choose one of {', '.join(SYNTHETIC_CLASSES)}")
    skin = _skin_colour(rng)
    hairy = bool(rng.random() < 0.3)
    # An "atypical" draw borrows the look of a neighbouring class for shape or size: the overlap real data has.
    atypical = bool(rng.random() < 0.15)

    if label == "melanoma":
        lesion = Lesion(
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
        extras = [("black", BLACK, 0.6), ("blue_grey", BLUE_GREY, 0.55), ("white", REGRESSION_WHITE, 0.3)]
        extras.append(("red", PEARLY_PINK, 0.15))
        chosen = [("light", LIGHT_BROWN), ("dark", DARK_BROWN)]
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
        lesion = Lesion(
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
        brown = (1 - shade) * LIGHT_BROWN + shade * (DARK_BROWN if atypical else MID_BROWN)
        lesion.colours = [brown * rng.uniform(0.95, 1.05, 3)]
        lesion.params.update(
            centre_shift=rng.uniform(-0.15, 0.15),  # centre a bit darker or lighter than the rim
            network=rng.uniform(0.0, 0.08),
            network_frequency=rng.uniform(18, 28),
        )
        lesion.grids["mottle"] = rng.standard_normal((6, 6))
        return lesion

    if label == "seborrheic_keratosis":
        lesion = Lesion(
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
        lesion = Lesion(
            label,
            skin,
            radius=rng.uniform(0.13, 0.32),
            aspect=rng.uniform(1.0, 1.4),
            harmonics=_harmonics(rng, (0.02, 0.12), (0.0, 0.02)),
            softness=rng.uniform(0.05, 0.12),
            opacity=rng.uniform(0.6, 0.85),  # translucent
            hairy=hairy,
        )
        lesion.colours = [np.clip(PEARLY_PINK * rng.uniform(0.92, 1.05, 3), 0, 1)]
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
    lesion = Lesion(
        label,
        skin,
        radius=rng.uniform(0.12, 0.26) if atypical else rng.uniform(0.08, 0.2),
        aspect=rng.uniform(1.0, 1.3),
        harmonics=_harmonics(rng, (0.0, 0.06), (0.0, 0.015)),
        softness=rng.uniform(0.1, 0.2),
        opacity=rng.uniform(0.75, 0.95),
        hairy=hairy,
    )
    lesion.colours = [(LIGHT_BROWN * 0.6 + MID_BROWN * 0.4) * rng.uniform(0.93, 1.07, 3)]
    lesion.grids["patch"] = rng.standard_normal((6, 6))
    lesion.params.update(
        patch_size=rng.uniform(0.3, 0.55),
        patch_strength=rng.uniform(0.45, 0.85) if not atypical else rng.uniform(0.15, 0.4),
        ring_strength=rng.uniform(0.5, 0.9),
        pink=rng.uniform(0.0, 0.3),
    )
    return lesion


def sample_view(rng: np.random.Generator, base: View | None = None) -> View:
    """A new photograph: of a fresh lesion (``base`` None) or of the same lesion again (small changes)."""
    if base is None:
        return View(
            centre=rng.normal(0, 0.04, 2),
            angle=rng.uniform(0, 2 * math.pi),
            scale=1.0,
            brightness=rng.uniform(0.9, 1.08),
            colour_cast=rng.normal(1.0, 0.025, 3),
            vignette=rng.uniform(0.0, 0.25),
            noise=rng.uniform(0.008, 0.03),
        )
    return View(
        centre=base.centre + rng.normal(0, 0.025, 2),
        angle=base.angle + rng.uniform(-0.35, 0.35),
        scale=rng.uniform(0.92, 1.08),
        brightness=base.brightness * rng.uniform(0.96, 1.04),
        colour_cast=base.colour_cast * rng.normal(1.0, 0.01, 3),
        vignette=float(np.clip(base.vignette + rng.normal(0, 0.04), 0, 0.3)),
        noise=rng.uniform(0.008, 0.03),
    )


