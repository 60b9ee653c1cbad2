"""Drawing a synthetic lesion: a view of a :class:`~dermlens.data.synthetic.lesions.Lesion` rendered with numpy
and Pillow (smooth noise, dot fields, vessels, hair), and :func:`render_lesion`, one image from a seed."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from dermlens.data.synthetic.lesions import (
    BLACK, BLUE_GREY, CRUST, DARK_BROWN, HAIR, MILIA, PEARLY_PINK, SCAR_WHITE, VESSEL_RED, Lesion, View, sample_lesion,
    sample_view,
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


def _to_pixels(points: np.ndarray, lesion: Lesion, view: View, size: int) -> np.ndarray:
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


def render(lesion: Lesion, view: View, rng: np.random.Generator, size: int) -> Image.Image:
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
        image = image * (1 - hair) + HAIR * rng.uniform(0.7, 1.3) * hair

    # Camera: brightness, colour cast, vignette, sensor noise.
    radial = np.sqrt(px * px + py * py) / math.sqrt(0.5)
    image = image * view.brightness * view.colour_cast[None, None, :]
    image = image * (1 - view.vignette * radial[..., None] ** 2)
    image = image + rng.normal(0, view.noise, image.shape)
    return Image.fromarray(np.clip(np.rint(image * 255), 0, 255).astype(np.uint8))


def _lesion_colour(
    lesion: Lesion,
    skin: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    alpha: np.ndarray,
    view: View,
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
        return colour_map * (1 - globules) + skin * BLACK * 1.5 * globules

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
        colour = colour * (1 - milia) + MILIA * milia
        return colour * (1 - comedos) + DARK_BROWN * 0.45 * comedos

    if label == "basal_cell_carcinoma":
        pink = np.broadcast_to(lesion.colours[0], skin.shape)
        # Translucent: some of the skin shows through; a pearly, brighter rolled rim.
        base = 0.75 * pink + 0.25 * skin
        rim = lesion.params["rim"] * np.exp(-(((t - 0.85) / 0.12) ** 2))
        base = base + rim[..., None] * (1.0 - base)
        base = base * (1.0 + 0.04 * _smooth_noise(lesion.grids["mottle"], x, y))[..., None]
        nests = _dot_field(lesion.dots["nests"], x, y, softness=0.5)[..., None]
        base = base * (1 - 0.85 * nests) + BLUE_GREY * 0.85 * nests
        if lesion.params["crust"] > 0:
            crust = np.clip((lesion.params["crust"] - t) / 0.08, 0, 1)[..., None]
            base = base * (1 - crust) + CRUST * crust
        if lesion.vessels:
            lines = [_to_pixels(points, lesion, view, size) for points in lesion.vessels]
            widths = [w * lesion.radius * view.scale * size for w in lesion.vessel_widths]
            vessels = (_line_mask(size, lines, widths) * (alpha > 0.5))[..., None]
            base = base * (1 - 0.9 * vessels) + VESSEL_RED * 0.9 * vessels
        return base

    # dermatofibroma: faint brown ring, white centre with an irregular outline, a little pink.
    ring = lesion.params["ring_strength"] * np.clip((t - 0.25) / 0.4, 0, 1)
    brown = skin * (1 - ring[..., None] * (1 - lesion.colours[0]))
    pink = lesion.params["pink"]
    brown = brown * (1 - pink * 0.3) + PEARLY_PINK * skin.max() * pink * 0.3
    outline = lesion.params["patch_size"] * (1.0 + 0.3 * _smooth_noise(lesion.grids["patch"], x, y))
    patch = lesion.params["patch_strength"] * np.clip((outline - t) / 0.25, 0, 1)[..., None]
    return brown * (1 - patch) + SCAR_WHITE * patch


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


def render_lesion(label: str, rng: np.random.Generator, size: int = 128) -> Image.Image:
    """Draw one synthetic lesion image of class ``label`` (one of :data:`SYNTHETIC_CLASSES`) as an RGB image.

    Everything random comes from ``rng``, so the same generator state gives the same image.
    """
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    lesion = sample_lesion(label, rng)
    return render(lesion, sample_view(rng), rng, size)


