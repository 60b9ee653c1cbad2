"""Tests for dermlens.data.io: every bad case gets a clear error; every decodable image comes out right."""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageFile

from dermlens.data.io import (
    MAX_PIXELS,
    ImageDecodeError,
    find_images,
    is_image_file,
    load_image,
)

# --------------------------------------------------------------------------------------------------------------
# helpers that write test images
# --------------------------------------------------------------------------------------------------------------


def _noise_image(size: int = 96, seed: int = 0) -> Image.Image:
    # Noise compresses badly, so cutting the file removes real image data, not just trailing markers.
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def _save(image: Image.Image, path: Path, **params) -> Path:
    image.save(path, **params)
    return path


def _png_with_header_size(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR is patched to claim width x height (CRC fixed, so only the size is a lie)."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), (10, 20, 30)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _assert_decode_error(excinfo: pytest.ExceptionInfo[ImageDecodeError], name: str, reason_part: str) -> None:
    error = excinfo.value
    assert name in str(error), f"file name {name!r} missing from {str(error)!r}"
    assert reason_part in error.reason, f"{reason_part!r} missing from reason {error.reason!r}"
    assert str(error) == f"{error.path}: {error.reason}"


def _close(actual, expected, tolerance: int = 6) -> bool:
    return all(abs(int(a) - int(e)) <= tolerance for a, e in zip(actual, expected, strict=True))


# --------------------------------------------------------------------------------------------------------------
# the error type
# --------------------------------------------------------------------------------------------------------------


def test_error_names_path_and_reason_and_survives_pickling():
    error = ImageDecodeError("scans/lesion_17.jpg", "file not found")
    assert isinstance(error, ValueError)
    assert error.path == "scans/lesion_17.jpg"
    assert error.reason == "file not found"
    assert str(error) == "scans/lesion_17.jpg: file not found"
    # Data-loader workers send exceptions between processes.
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.path, copy.reason, str(copy)) == (ImageDecodeError, error.path, error.reason, str(error))


# --------------------------------------------------------------------------------------------------------------
# bad files
# --------------------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "no_such_lesion.jpg"
    with pytest.raises(ImageDecodeError) as excinfo:
        load_image(path)
    _assert_decode_error(excinfo, "no_such_lesion.jpg", "file not found")
    assert excinfo.value.path == str(path)


def test_directory(tmp_path):
    folder = tmp_path / "looks_like_image.png"
    folder.mkdir()
    with pytest.raises(ImageDecodeError) as excinfo:
        load_image(str(folder))
    _assert_decode_error(excinfo, "looks_like_image.png", "directory")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageDecodeError) as excinfo:
        load_image(path)
    _assert_decode_error(excinfo, "empty.jpg", "empty file (0 bytes)")


def test_empty_bytes_and_empty_file_object():
    with pytest.raises(ImageDecodeError) as excinfo:
        load_image(b"", name="upload.png")
    _assert_decode_error(excinfo, "upload.png", "empty file (0 bytes)")
    with pytest.raises(ImageDecodeError) as excinfo:
        load_image(io.BytesIO(b""))
    _assert_decode_error(excinfo, "<bytes>", "empty file (0 bytes)")


def test_text_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("patient said it itches\n")
    with pytest.raises(ImageDecodeError) as excinfo:
        load_image(path)
    _assert_decode_error(excinfo, "notes.txt", "not an image file (cannot identify format)")


def test_random_bytes_with_jpg_extension(tmp_path):
    path = tmp_path / "random.jpg"
    path.write_bytes(np.random.default_rng(1).bytes(4000))
    with pytest.raises(ImageDecodeError) as excinfo:
        load_image(path)
    _assert_decode_error(excinfo, "random.jpg", "not an image file (cannot identify format)")


@pytest.mark.parametrize("fmt, suffix", [("JPEG", ".jpg"), ("PNG", ".png")])
@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_file(tmp_path, fmt, suffix, keep):
    whole = tmp_path / f"whole{suffix}"
    _save(_noise_image(), whole, format=fmt)
    assert load_image(whole).size == (96, 96)  # the uncut file is fine
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ImageDecodeError) as excinfo:
        load_image(cut)
    _assert_decode_error(excinfo, "cut" + suffix, "truncated or corrupt image data")


def test_png_cut_inside_its_header_is_reported_as_corrupt_not_as_non_image(tmp_path):
    path = tmp_path / "header_cut.png"
    buffer = io.BytesIO()
    _noise_image().save(buffer, "PNG")
    path.write_bytes(buffer.getvalue()[:20])
    with pytest.raises(ImageDecodeError) as excinfo:
        load_image(path)
    _assert_decode_error(excinfo, "header_cut.png", "truncated or corrupt image data")


def test_corrupt_jpeg_data(tmp_path):
    buffer = io.BytesIO()
    _noise_image(seed=2).save(buffer, "JPEG", quality=90)
    data = bytearray(buffer.getvalue())
    middle = len(data) // 2
    data[middle : middle + 300] = np.random.default_rng(3).bytes(300)
    path = tmp_path / "scrambled.jpg"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageDecodeError) as excinfo:
        load_image(path)
    _assert_decode_error(excinfo, "scrambled.jpg", "truncated or corrupt image data")


def test_truncated_image_is_rejected_even_if_someone_turned_on_load_truncated_images(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    buffer = io.BytesIO()
    _noise_image().save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        load_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is put back


def test_lazily_opened_pil_image_of_a_truncated_file(tmp_path):
    buffer = io.BytesIO()
    _noise_image().save(buffer, "PNG")
    path = tmp_path / "lazy.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with Image.open(path) as lazy, pytest.raises(ImageDecodeError) as excinfo:
        load_image(lazy, name="lazy.png")
    _assert_decode_error(excinfo, "lazy.png", "truncated or corrupt image data")


# --------------------------------------------------------------------------------------------------------------
# pixel limits and zero size
# --------------------------------------------------------------------------------------------------------------


def test_header_claiming_more_than_100_megapixels_is_rejected_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_with_header_size(20_000, 6_000))
    limit_before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageDecodeError) as excinfo:
        load_image(path)
    # The file holds one pixel of data: had it been decoded first, the error would say "truncated".
    _assert_decode_error(excinfo, "huge.png", "image has 120000000 pixels, more than the limit of 100000000")
    assert Image.MAX_IMAGE_PIXELS == limit_before


def test_pillow_decompression_bomb_error_becomes_our_error(tmp_path):
    # 200 MP is beyond Pillow's own hard limit (2 x MAX_IMAGE_PIXELS), so Pillow raises inside Image.open.
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_with_header_size(20_000, 10_000))
    with pytest.raises(ImageDecodeError) as excinfo:
        load_image(path)
    _assert_decode_error(excinfo, "bomb.png", f"image has 200000000 pixels, more than the limit of {MAX_PIXELS}")


def test_small_max_pixels(tmp_path):
    path = _save(_noise_image(64), tmp_path / "ok.png")
    assert load_image(path, max_pixels=64 * 64).size == (64, 64)
    with pytest.raises(ImageDecodeError) as excinfo:
        load_image(path, max_pixels=64 * 64 - 1)
    _assert_decode_error(excinfo, "ok.png", "image has 4096 pixels, more than the limit of 4095")
    with pytest.raises(ImageDecodeError, match="more than the limit of 100"):
        load_image(np.zeros((20, 20, 3), np.uint8), max_pixels=100)


def test_zero_size_images(tmp_path):
    with pytest.raises(ImageDecodeError) as excinfo:
        load_image(Image.new("RGB", (0, 5)), name="blank")
    _assert_decode_error(excinfo, "blank", "zero size")
    with pytest.raises(ImageDecodeError) as excinfo:
        load_image(np.zeros((0, 5, 3), np.uint8))
    _assert_decode_error(excinfo, "<array>", "zero size")
    path = tmp_path / "zero_width.png"
    path.write_bytes(_png_with_header_size(0, 5))
    with pytest.raises(ImageDecodeError) as excinfo:
        load_image(path)
    assert "zero_width.png" in str(excinfo.value)


# --------------------------------------------------------------------------------------------------------------
# modes that must be converted, not rejected
# --------------------------------------------------------------------------------------------------------------


def test_rgb_jpeg_round_trip(tmp_path):
    path = _save(Image.new("RGB", (30, 20), (200, 120, 80)), tmp_path / "plain.jpg", quality=95)
    image = load_image(path)
    assert (image.mode, image.size) == ("RGB", (30, 20))
    assert _close(image.getpixel((15, 10)), (200, 120, 80), 4)


def test_grayscale_png(tmp_path):
    path = _save(Image.new("L", (8, 8), 77), tmp_path / "gray.png")
    image = load_image(path)
    assert image.mode == "RGB"
    assert image.getpixel((3, 3)) == (77, 77, 77)


def test_grayscale_with_alpha_is_composited_on_white(tmp_path):
    source = Image.new("LA", (2, 1))
    source.putpixel((0, 0), (40, 255))  # opaque dark grey
    source.putpixel((1, 0), (40, 0))  # fully transparent
    image = load_image(_save(source, tmp_path / "la.png"))
    assert image.getpixel((0, 0)) == (40, 40, 40)
    assert image.getpixel((1, 0)) == (255, 255, 255)


def test_palette_with_transparency(tmp_path):
    source = Image.new("P", (3, 1), 0)
    source.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0] + [0] * (256 * 3 - 9))
    source.putpixel((1, 0), 1)
    source.putpixel((2, 0), 2)
    path = _save(source, tmp_path / "palette.png", transparency=0)
    with Image.open(path) as check:
        assert check.mode == "P"
    image = load_image(path)
    assert image.getpixel((0, 0)) == (255, 255, 255)  # transparent index -> white, not red
    assert image.getpixel((1, 0)) == (0, 0, 255)
    assert image.getpixel((2, 0)) == (0, 255, 0)


def test_cmyk_jpeg(tmp_path):
    path = _save(Image.new("CMYK", (16, 16), (255, 0, 0, 0)), tmp_path / "cyan_cmyk.jpg", quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    image = load_image(path)
    assert image.mode == "RGB"
    assert _close(image.getpixel((8, 8)), (0, 255, 255), 8)


def test_rgba_composited_on_white_not_alpha_dropped(tmp_path):
    source = Image.new("RGBA", (3, 1))
    source.putpixel((0, 0), (200, 0, 0, 0))  # transparent red: dropping alpha would show red
    source.putpixel((1, 0), (200, 0, 0, 255))
    source.putpixel((2, 0), (0, 0, 0, 128))  # half-transparent black
    image = load_image(_save(source, tmp_path / "rgba.png"))
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((1, 0)) == (200, 0, 0)
    assert _close(image.getpixel((2, 0)), (127, 127, 127), 2)


def test_rgb_png_with_trns_colour_key(tmp_path):
    source = Image.new("RGB", (2, 1), (10, 20, 30))
    source.putpixel((1, 0), (90, 80, 70))
    image = load_image(_save(source, tmp_path / "trns.png", transparency=(10, 20, 30)))
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((1, 0)) == (90, 80, 70)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 32768, 65535, 1000]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    with Image.open(path) as check:
        assert check.mode == "I;16"
    image = load_image(path)
    assert image.mode == "RGB"
    assert [image.getpixel((x, 0))[0] for x in range(4)] == [0, 128, 255, 4]
    assert image.getpixel((2, 0)) == (255, 255, 255)


def test_32_bit_integer_mode_i_is_taken_as_16_bit_data(tmp_path):
    path = _save(Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.int32)), tmp_path / "mode_i.tif")
    with Image.open(path) as check:
        assert check.mode == "I"
    image = load_image(path)
    assert [image.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_float_mode_f(tmp_path):
    path = _save(Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)), tmp_path / "float.tif")
    with Image.open(path) as check:
        assert check.mode == "F"
    image = load_image(path)
    assert [image.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_one_bit_image(tmp_path):
    source = Image.new("1", (2, 1), 0)
    source.putpixel((1, 0), 1)
    image = load_image(_save(source, tmp_path / "bilevel.png"))
    assert image.getpixel((0, 0)) == (0, 0, 0)
    assert image.getpixel((1, 0)) == (255, 255, 255)


def test_exif_orientation_6_rotates_and_moves_the_marker(tmp_path):
    # Stored 40 wide x 20 high, blue with a red marker in the stored top-left corner.
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:] = (0, 0, 255)
    stored[:8, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = _save(Image.fromarray(stored), tmp_path / "phone.jpg", quality=95, exif=exif)
    image = load_image(path)
    assert image.size == (20, 40)  # width and height swapped
    # Rotating clockwise takes the stored top-left corner to the displayed top-right corner.
    assert _close(image.getpixel((20 - 4, 4)), (255, 0, 0), 40)
    for x, y in [(4, 4), (4, 36), (16, 36)]:
        assert _close(image.getpixel((x, y)), (0, 0, 255), 40), (x, y)


@pytest.mark.parametrize("fmt, suffix", [("GIF", ".gif"), ("TIFF", ".tif")])
def test_multi_frame_gives_first_frame(tmp_path, fmt, suffix):
    frames = [Image.new("RGB", (6, 6), colour) for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    path = tmp_path / f"frames{suffix}"
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:])
    with Image.open(path) as check:
        assert check.n_frames == 3
    assert _close(load_image(path).getpixel((3, 3)), (255, 0, 0), 4)


# --------------------------------------------------------------------------------------------------------------
# kinds of source
# --------------------------------------------------------------------------------------------------------------


def test_bytes_file_objects_and_pil_images(tmp_path):
    path = _save(Image.new("RGB", (5, 4), (1, 2, 3)), tmp_path / "src.png")
    data = path.read_bytes()
    for source in (data, bytearray(data), memoryview(data), io.BytesIO(data), str(path), path):
        image = load_image(source)
        assert (image.mode, image.size, image.getpixel((0, 0))) == ("RGB", (5, 4), (1, 2, 3)), type(source)

    with open(path, "rb") as handle:
        assert load_image(handle).size == (5, 4)
        assert not handle.closed  # the caller's file object is left open

    original = Image.new("L", (3, 3), 9)
    result = load_image(original)
    assert result is not original and original.mode == "L" and result.mode == "RGB"


def test_error_names_for_bytes_and_file_objects(tmp_path):
    with pytest.raises(ImageDecodeError) as excinfo:
        load_image(b"not an image at all")
    _assert_decode_error(excinfo, "<bytes>", "not an image file")
    with pytest.raises(ImageDecodeError) as excinfo:
        load_image(b"not an image at all", name="upload_42.jpg")
    assert excinfo.value.path == "upload_42.jpg"
    bad = tmp_path / "handle.jpg"
    bad.write_text("text")
    with open(bad, "rb") as handle, pytest.raises(ImageDecodeError) as excinfo:
        load_image(handle)
    assert excinfo.value.path == str(bad)  # a real file object's name is more useful than "<bytes>"


def test_result_is_fully_loaded_and_independent_of_the_file(tmp_path):
    path = _save(_noise_image(32), tmp_path / "gone.png")
    image = load_image(path)
    path.unlink()
    assert image.getpixel((0, 0)) == _noise_image(32).getpixel((0, 0))


def test_unsupported_source_type():
    with pytest.raises(TypeError, match="cannot read a int"):
        load_image(42)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------------
# numpy arrays
# --------------------------------------------------------------------------------------------------------------


def test_numpy_inputs_of_each_dtype_and_shape():
    gray = np.array([[0, 100], [200, 255]], np.uint8)
    assert load_image(gray).getpixel((1, 0)) == (100, 100, 100)
    assert load_image(gray[:, :, None]).getpixel((0, 1)) == (200, 200, 200)

    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 2] = (10, 20, 30)
    image = load_image(rgb)
    assert image.size == (3, 2)  # PIL size is (width, height)
    assert image.getpixel((2, 0)) == (10, 20, 30)

    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 0] = (50, 60, 70, 0)
    rgba[0, 1] = (50, 60, 70, 255)
    image = load_image(rgba)
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((1, 0)) == (50, 60, 70)

    deep = np.array([[0, 32768, 65535]], np.uint16)
    assert [load_image(deep).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    deep_rgb = np.full((1, 1, 3), 65535, np.uint16)
    deep_rgb[0, 0, 1] = 32768
    assert load_image(deep_rgb).getpixel((0, 0)) == (255, 128, 255)

    for dtype in (np.float16, np.float32, np.float64):
        values = np.array([[0.0, 0.5, 1.0]], dtype)
        assert [load_image(values).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255], dtype
    unit_rgba = np.zeros((1, 1, 4), np.float32)
    unit_rgba[0, 0] = (1.0, 0.0, 0.0, 0.5)
    assert _close(load_image(unit_rgba).getpixel((0, 0)), (255, 128, 128), 1)

    assert load_image(np.array([[True, False]])).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.array([[3, 250]])).getpixel((1, 0)) == (250, 250, 250)  # int64 in 0..255


@pytest.mark.parametrize(
    "array, reason_part",
    [
        (np.full((2, 2, 3), 1.5, np.float32), "must be in [0, 1]"),
        (np.array([[0.2, np.nan]], np.float32), "NaN"),
        (np.zeros((3, 16, 16), np.uint8), "unsupported array shape (3, 16, 16)"),
        (np.zeros((4, 4, 2), np.uint8), "unsupported array shape"),
        (np.zeros((2, 2, 2, 3), np.uint8), "unsupported array shape"),
        (np.array([[300, 0]]), "must be in 0..255"),
        (np.zeros((2, 2), np.complex64), "unsupported array dtype"),
    ],
)
def test_numpy_inputs_we_cannot_interpret(array, reason_part):
    with pytest.raises(ImageDecodeError) as excinfo:
        load_image(array, name="frame_7")
    _assert_decode_error(excinfo, "frame_7", reason_part)


@settings(max_examples=25, deadline=None)
@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12), st.just(3))))
def test_uint8_rgb_arrays_round_trip_exactly(array):
    assert np.array_equal(np.asarray(load_image(array)), array)


@settings(max_examples=25, deadline=None)
@given(hnp.arrays(np.uint16, st.tuples(st.integers(1, 8), st.integers(1, 8))))
def test_uint16_scaling_is_rounded_linear(array):
    out = np.asarray(load_image(array))[:, :, 0].astype(int)
    expected = np.floor(array.astype(np.float64) * 255 / 65535 + 0.5).astype(int)
    assert np.array_equal(out, expected)


# --------------------------------------------------------------------------------------------------------------
# finding images
# --------------------------------------------------------------------------------------------------------------


def test_is_image_file():
    for name in ["a.jpg", "b.JPEG", "c.png", "d.bmp", "e.tif", "f.TIFF", "g.webp", "h.gif", "dir/x.Jpg"]:
        assert is_image_file(name), name
    for name in ["notes.txt", "a.jpg.txt", "archive.zip", "noext", "labels.csv"]:
        assert not is_image_file(name), name


def test_find_images_expands_folders_sorted_and_keeps_explicit_files(tmp_path):
    root = tmp_path / "scans"
    (root / "b_patient").mkdir(parents=True)
    (root / "a_patient" / "visit2").mkdir(parents=True)
    (root / ".ipynb_checkpoints").mkdir()
    for relative in [
        "z.png",
        "b_patient/1.JPG",
        "a_patient/visit2/x.tif",
        "a_patient/0.jpeg",
        "a_patient/readme.txt",
        ".hidden.png",
        ".ipynb_checkpoints/z-checkpoint.png",
    ]:
        (root / relative).write_bytes(b"x")
    explicit_text = tmp_path / "report.txt"
    explicit_text.write_text("not an image")
    missing = tmp_path / "missing.jpg"

    found = find_images([explicit_text, root, missing])
    assert found == [
        explicit_text,
        root / "a_patient" / "0.jpeg",
        root / "a_patient" / "visit2" / "x.tif",
        root / "b_patient" / "1.JPG",
        root / "z.png",
        missing,
    ]
    assert find_images([root], recursive=False) == [root / "z.png"]
    assert find_images(str(root)) == find_images([root])  # one path, not a string of characters
    assert find_images([root, root / "z.png"]) == find_images([root])  # no duplicates
    # A file kept explicitly fails later with a clear error rather than vanishing.
    with pytest.raises(ImageDecodeError, match="report.txt: not an image file"):
        load_image(found[0])
