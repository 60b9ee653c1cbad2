import numpy as np
import pytest
from PIL import Image, ImageDraw

from dermlens.segment.measurements import longest_diameter, measure


def _ellipse(width=200, height=160, box=(40, 50, 160, 110), angle=0.0) -> np.ndarray:
    image = Image.new("L", (width, height), 0)
    ImageDraw.Draw(image).ellipse(box, fill=255)
    if angle:
        image = image.rotate(angle, resample=Image.BILINEAR, center=((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
    return np.asarray(image, dtype=np.float64) / 255.0


def test_ellipse_diameter_area_and_symmetry():
    m = measure(_ellipse())  # 120 x 60 ellipse
    assert m["longest_diameter_px"] == pytest.approx(121, abs=2.5)
    assert m["area_px"] == pytest.approx(np.pi * 60 * 30, rel=0.03)
    assert m["mask_area_px"] == pytest.approx(m["area_px"], rel=0.03)
    assert m["asymmetry_major"] < 0.03 and m["asymmetry_minor"] < 0.03


def test_asymmetry_does_not_depend_on_orientation():
    for angle in (30, 75):
        m = measure(_ellipse(angle=angle))
        assert m["asymmetry_major"] < 0.05 and m["asymmetry_minor"] < 0.05, angle


def test_lopsided_shape_is_asymmetric_about_the_minor_axis():
    shape = np.zeros((100, 160))
    shape[40:60, 20:140] = 1  # a bar ...
    shape[20:80, 100:140] = 1  # ... with a big knob at one end: symmetric top/bottom, not left/right
    m = measure(shape)
    assert m["asymmetry_major"] < 0.02
    assert m["asymmetry_minor"] > 0.3


def test_mm_scale_and_empty_map():
    m = measure(_ellipse(), mm_per_pixel=0.1)
    assert m["longest_diameter_mm"] == pytest.approx(m["longest_diameter_px"] * 0.1)
    assert m["area_mm2"] == pytest.approx(m["area_px"] * 0.01)
    empty = measure(np.zeros((30, 30)))
    assert empty["area_px"] == 0 and empty["longest_diameter_px"] == 0
    assert np.isnan(empty["asymmetry_major"])


def test_single_pixel_and_line_diameters():
    one = np.zeros((5, 5), bool)
    one[2, 2] = True
    assert longest_diameter(one) == pytest.approx(np.sqrt(2))
    line = np.zeros((5, 20), bool)
    line[2, 3:13] = True
    assert longest_diameter(line) == pytest.approx(np.hypot(10, 1))
