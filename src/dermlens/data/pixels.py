"""Pixels of any mode or dtype to 8-bit RGB: 16-bit and float images scaled (not clipped), transparency composited
on white. :func:`dermlens.data.io.load_image` calls these and turns a :class:`PixelError` into an error naming the file."""
from __future__ import annotations

import numpy as np
from PIL import Image


class PixelError(ValueError):
    """Pixel values or a mode that cannot be turned into an 8-bit RGB image; the message says why."""


def to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grayscale (and Pillow's 32-bit "I", which is how 16-bit data often arrives): scale, do not clip.
        pixels = np.asarray(image).astype(np.int64)
        if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
            low, high = int(pixels.min()), int(pixels.max())
            raise PixelError(f"32-bit integer pixels outside 0..65535 (range {low}..{high})")
        return Image.fromarray(scale_uint16(pixels)).convert("RGB")
    if mode == "F":
        return Image.fromarray(float_image_to_uint8(np.asarray(image))).convert("RGB")
    if mode == "La":  # premultiplied grey+alpha: Pillow only un-premultiplies it to LA
        image = image.convert("LA")
    if image.has_transparency_data:
        return composite_on_white(image.convert("RGBA"))
    if mode == "RGB":
        return image  # already a fresh image: exif_transpose copies
    # L, 1, P, CMYK, YCbCr, HSV ...: Pillow knows these conversions.
    return image.convert("RGB")


def composite_on_white(image: Image.Image) -> Image.Image:
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def scale_uint16(pixels: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 with rounding (65535 -> 255, 32768 -> 128)."""
    wide = pixels.astype(np.uint32)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def scale_unit_float(pixels: np.ndarray) -> np.ndarray:
    return np.rint(pixels.astype(np.float64) * 255.0).astype(np.uint8)


def float_image_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Pillow mode F: [0, 1] is scaled like a float array; Pillow's own convention 0..255 is also accepted."""
    if not np.all(np.isfinite(pixels)):
        raise PixelError("image contains NaN or infinite pixel values")
    low, high = float(pixels.min()), float(pixels.max())
    if low >= 0.0 and high <= 1.0:
        return scale_unit_float(pixels)
    if low >= 0.0 and high <= 255.0:
        return np.rint(pixels).astype(np.uint8)
    raise PixelError(f"float pixels outside [0, 1] and [0, 255] (range {low:g}..{high:g})")


def array_to_uint8(array: np.ndarray) -> np.ndarray:
    dtype = array.dtype
    if dtype == np.uint8:
        return array
    if dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if dtype == np.uint16:
        return scale_uint16(array)
    if np.issubdtype(dtype, np.floating):
        if array.size and not np.all(np.isfinite(array)):
            raise PixelError("array contains NaN or infinite values")
        low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        if low < 0.0 or high > 1.0:
            raise PixelError(f"float array values must be in [0, 1], got {low:g}..{high:g}")
        return scale_unit_float(array)
    if np.issubdtype(dtype, np.integer):
        # Plain integer arrays (e.g. np.array of Python ints) are taken as 8-bit values when they fit.
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if low < 0 or high > 255:
            raise PixelError(f"{dtype} array values must be in 0..255 (got {low}..{high}); use uint16 for 16-bit data")
        return array.astype(np.uint8)
    raise PixelError(f"unsupported array dtype {dtype}; expected uint8, uint16 or float in [0, 1]")
