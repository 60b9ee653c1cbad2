"""Fuzzing the decoder: mutated JPEG / PNG / TIFF bytes give an RGB image or ImageDecodeError, never anything else.

The long run (tens of thousands of inputs, memory watched) is ``benchmarks/decoder_fuzz.py``; this keeps a short one
in the suite so that a decoder change that lets a library exception escape fails here.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dermlens.data.io import ImageDecodeError, load_image


def encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


SEEDS = {fmt: encoded(fmt) for fmt in ("JPEG", "PNG", "TIFF")}

mutations = st.lists(
    st.tuples(st.sampled_from(["set", "cut", "insert"]), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
    min_size=1, max_size=6,
)


def apply(data: bytes, edits) -> bytes:
    b = bytearray(data)
    for kind, where, chunk in edits:
        i = int(where * len(b))
        if kind == "set":
            b[i:i + len(chunk)] = chunk
        elif kind == "cut":
            del b[i:i + 4 * len(chunk)]
        else:
            b[i:i] = chunk
    return bytes(b)


@pytest.mark.parametrize("fmt", sorted(SEEDS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=mutations)
def test_mutated_bytes_decode_or_raise_the_decoders_own_error(fmt, edits):
    data = apply(SEEDS[fmt], edits)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            image = load_image(data)
        except ImageDecodeError as error:
            assert str(error).strip()
            return
    assert image.mode == "RGB" and min(image.size) >= 1


def test_a_tiff_whose_flipped_tag_makes_pillow_raise_typeerror_is_a_decode_error():
    """Found by benchmarks/decoder_fuzz.py (seed 1, input 87311): Pillow's TIFF parser raised TypeError."""
    from pathlib import Path

    path = Path(__file__).parent / "corrupt" / "bitflipped-tag.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ImageDecodeError, match="bitflipped-tag.tif: truncated or corrupt"):
            load_image(path)
