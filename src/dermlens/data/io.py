"""Image decoding with clear errors.

Every image that enters dermlens goes through :func:`load_image`. It accepts the forms images come in (a path,
bytes, a binary file object, a PIL image or a numpy array) and returns one thing: a fully decoded 8-bit RGB PIL image
the right way up. Anything that cannot be turned into that raises :class:`ImageDecodeError`, which names the file and
says what is wrong in plain words, so a batch job can report the bad file and go on.

Only Pillow and numpy are used here; no torch.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import struct
import threading
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from dermlens.data.pixels import PixelError, array_to_uint8, composite_on_white, to_rgb

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "ImageDecodeError",
    "find_images",
    "is_image_file",
    "load_image",
    "output_stems",
]

MAX_PIXELS = 100_000_000  # 100 megapixels: far above any dermoscope or phone camera, far below a memory blow-up.

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})

# Magic numbers of the formats we expect. Pillow reports "cannot identify image file" both for a text file and for
# a PNG whose header chunks are cut off; the signature lets us tell the user which of the two it is.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)

_PIL_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


# Pillow's parsers meet corrupt bytes with whatever their code trips over, not only OSError: decoder fuzzing
# (benchmarks/decoder_fuzz.py) found a TypeError from a bit-flipped TIFF tag. All of these mean "corrupt data" here.
CORRUPT_DATA_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, ZeroDivisionError,
                       struct.error, MemoryError)


class ImageDecodeError(ValueError):
    """An image could not be read. Names the file and the problem in plain words.

    ``str(error) == f"{error.path}: {error.reason}"``.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    # Errors cross process boundaries (data-loader workers); the default pickling would call __init__ with the
    # formatted message only and fail.
    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.reason))


# --------------------------------------------------------------------------------------------------------------
# Truncated-image guard
# --------------------------------------------------------------------------------------------------------------

_truncation_lock = threading.Lock()
_strict_depth = 0
_saved_load_truncated = False


@contextlib.contextmanager
def _strict_truncation() -> Iterator[None]:
    """Make Pillow raise on truncated data while we decode, whatever other code set globally.

    ``ImageFile.LOAD_TRUNCATED_IMAGES`` is a module global that some libraries switch on to silently pad broken
    files with grey. We switch it off for the duration of our decode and put back what was there. A depth counter
    keeps concurrent decodes in several threads from restoring the flag while another one is still decoding.
    """
    global _strict_depth, _saved_load_truncated
    with _truncation_lock:
        if _strict_depth == 0:
            _saved_load_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
        _strict_depth += 1
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        with _truncation_lock:
            _strict_depth -= 1
            if _strict_depth == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = _saved_load_truncated


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True if the file name has an image extension we read (case-insensitive). Does not look at the contents."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def find_images(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str], recursive: bool = True) -> list[Path]:
    """Expand folders into the image files they hold; keep files given explicitly as they are.

    - A folder contributes its files with an image extension, sorted by relative path so the order is the same on
      every machine. Hidden files and folders (name starting with ".", e.g. macOS "._IMG.jpg" or
      ".ipynb_checkpoints") are skipped. With ``recursive=False`` only the folder's own files are taken.
    - Anything else given explicitly (a file of any extension, or a path that does not exist) is kept as given,
      so that it fails later with a clear error instead of silently vanishing from a batch.
    - A single path may be passed instead of a list. Duplicates are dropped, first occurrence wins.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        if path not in seen:
            seen.add(path)
            found.append(path)

    for given in paths:
        path = Path(given)
        if path.is_dir():
            for file in _images_in_folder(path, recursive):
                add(file)
        else:
            add(path)
    return found


def output_stems(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """One output name per input, for commands that write files named after their inputs (screen, segment).

    Two folders may both hold ``lesion.jpg``: the first keeps ``lesion``, the next get ``lesion-2``, ``lesion-3``...
    (skipping any name an input already has), so no output overwrites another.
    """
    paths = [Path(p) for p in paths]
    taken = {p.stem or "image" for p in paths}
    used: set[str] = set()
    stems = []
    for path in paths:
        stem = path.stem or "image"
        if stem in used:
            k = 2
            while f"{stem}-{k}" in used or f"{stem}-{k}" in taken:
                k += 1
            stem = f"{stem}-{k}"
        used.add(stem)
        stems.append(stem)
    return stems


def _images_in_folder(folder: Path, recursive: bool) -> list[Path]:
    files: list[Path] = []
    # Symlinked sub-folders are followed (archives are often assembled from links), each real folder once: a link
    # back to a folder already walked (a loop, or a second route to the same photos) is not entered again.
    walked = {os.path.realpath(folder)}
    for root, dirnames, filenames in os.walk(folder, followlinks=True):
        entered = []
        for name in sorted(d for d in dirnames if not d.startswith(".")) if recursive else []:
            real = os.path.realpath(os.path.join(root, name))
            if real not in walked:
                walked.add(real)
                entered.append(name)
        dirnames[:] = entered
        root_path = Path(root)
        for filename in filenames:
            if filename.startswith(".") or not is_image_file(filename):
                continue
            files.append(root_path / filename)
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def load_image(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO | Image.Image | np.ndarray,
    *,
    max_pixels: int = MAX_PIXELS,
    name: str | None = None,
) -> Image.Image:
    """Decode ``source`` into a fully loaded 8-bit RGB PIL image, EXIF orientation applied.

    ``source`` may be a path (str or Path), bytes, a binary file object, a PIL image, or a numpy array
    (HxW, HxWx3 or HxWx4; uint8, uint16, or float with values in [0, 1]).

    Colour handling: grayscale is replicated; palette and CMYK go through Pillow's conversion; transparency
    (RGBA, LA, palette or tRNS transparency) is composited onto white; 16-bit data is scaled 0..65535 -> 0..255
    (not clipped); float data in [0, 1] is scaled to 0..255. Multi-frame files (GIF, TIFF) give their first frame.

    The pixel count is checked against ``max_pixels`` from the header, before anything is decoded.

    ``name`` is the name used in error messages; by default the path, the file object's ``name`` attribute, or
    ``"<bytes>"`` / ``"<image>"`` / ``"<array>"``.

    Raises:
        ImageDecodeError: the file is missing, a folder, empty, not an image, truncated or corrupt, too large,
            of zero size, or (for arrays) of a shape, dtype or value range we cannot interpret.
    """
    if isinstance(source, np.ndarray):
        return _image_from_array(source, name or "<array>", max_pixels)
    if isinstance(source, Image.Image):
        return _image_from_pil(source, name or "<image>", max_pixels)
    if isinstance(source, (str, os.PathLike)):
        return _image_from_path(Path(source), name, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        data = bytes(source)
        if not data:
            raise ImageDecodeError(label, "empty file (0 bytes)")
        return _decode_stream(io.BytesIO(data), label, max_pixels, head=data[:16])
    if hasattr(source, "read"):
        label = name or _file_object_name(source)
        return _image_from_file_object(source, label, max_pixels)
    raise TypeError(
        f"load_image cannot read a {type(source).__name__}; "
        "give a path, bytes, a binary file object, a PIL image or a numpy array"
    )


# --------------------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------------------


def _file_object_name(fileobj: Any) -> str:
    file_name = getattr(fileobj, "name", None)
    return file_name if isinstance(file_name, str) and file_name else "<bytes>"


def _image_from_path(path: Path, name: str | None, max_pixels: int) -> Image.Image:
    label = name or str(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ImageDecodeError(label, "file not found") from None
    except PermissionError:
        raise ImageDecodeError(label, "permission denied") from None
    except OSError as error:
        raise ImageDecodeError(label, f"cannot access file ({error.strerror or error})") from None
    if path.is_dir():
        raise ImageDecodeError(label, "is a directory, not an image file")
    if stat.st_size == 0:
        raise ImageDecodeError(label, "empty file (0 bytes)")
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below, after decoding
    except PermissionError:
        raise ImageDecodeError(label, "permission denied") from None
    except OSError as error:
        raise ImageDecodeError(label, f"cannot open file ({error.strerror or error})") from None
    with stream:
        head = stream.read(16)
        stream.seek(0)
        return _decode_stream(stream, label, max_pixels, head=head)


def _image_from_file_object(fileobj: Any, label: str, max_pixels: int) -> Image.Image:
    try:
        seekable = bool(getattr(fileobj, "seekable", lambda: False)())
        if seekable:
            start = fileobj.tell()
            head = fileobj.read(16)
            fileobj.seek(start)
            stream = fileobj
        else:
            # Pillow needs to seek; read a non-seekable stream (socket, pipe) into memory.
            data = fileobj.read()
            head = data[:16]
            stream = io.BytesIO(data)
    except OSError as error:
        raise ImageDecodeError(label, f"cannot read file ({error})") from None
    if isinstance(head, str):
        raise ImageDecodeError(label, "file object is open in text mode; open it with 'rb'")
    if not head:
        raise ImageDecodeError(label, "empty file (0 bytes)")
    return _decode_stream(stream, label, max_pixels, head=head)


def _decode_stream(stream: BinaryIO, label: str, max_pixels: int, *, head: bytes) -> Image.Image:
    """Open (header only), check the size, then decode the first frame and normalise it."""
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own global limit (~89 MP); our max_pixels check below is the one that counts.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(stream)
    except Image.DecompressionBombError as error:
        raise _too_many_pixels_from_pillow(label, error, max_pixels) from None
    except UnidentifiedImageError:
        detected = _format_from_signature(head)
        if detected is not None:
            raise ImageDecodeError(
                label, f"truncated or corrupt image data (starts like a {detected} file but its header is unreadable)"
            ) from None
        raise ImageDecodeError(label, "not an image file (cannot identify format)") from None
    except CORRUPT_DATA_ERRORS as error:
        raise ImageDecodeError(label, f"truncated or corrupt image data ({_describe(error)})") from None

    # Closes the file only if Pillow opened it itself; a caller's file object stays open.
    with opened:
        _check_dimensions(label, opened.size, max_pixels)
        _decode_pixels(opened, label, max_pixels)
        return _normalise(opened, label)


def _image_from_pil(image: Image.Image, label: str, max_pixels: int) -> Image.Image:
    try:
        size = image.size
    except (AttributeError, ValueError) as error:  # closed images raise on access
        raise ImageDecodeError(label, f"unusable PIL image ({_describe(error)})") from None
    _check_dimensions(label, size, max_pixels)
    # A lazily opened image (Image.open without load) still has to be decoded; a given frame is respected.
    _decode_pixels(image, label, max_pixels)
    return _normalise(image, label)


def _image_from_array(array: np.ndarray, label: str, max_pixels: int) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ImageDecodeError(
            label, f"unsupported array shape {tuple(array.shape)}; expected HxW, HxWx3 or HxWx4 (channels last)"
        )
    height, width = array.shape[:2]
    _check_dimensions(label, (width, height), max_pixels)
    try:
        pixels = array_to_uint8(array)
    except PixelError as error:
        raise ImageDecodeError(label, str(error)) from None
    if pixels.ndim == 2:
        return Image.fromarray(pixels).convert("RGB")
    if pixels.shape[2] == 3:
        return Image.fromarray(np.ascontiguousarray(pixels))
    return composite_on_white(Image.fromarray(np.ascontiguousarray(pixels)))


# --------------------------------------------------------------------------------------------------------------
# Checks and conversions
# --------------------------------------------------------------------------------------------------------------


def _check_dimensions(label: str, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(label, f"image has zero size ({width}x{height} pixels)")
    pixels = width * height
    if pixels > max_pixels:
        raise ImageDecodeError(label, f"image has {pixels} pixels, more than the limit of {max_pixels}")


def _too_many_pixels_from_pillow(label: str, error: Exception, max_pixels: int) -> ImageDecodeError:
    match = _PIL_BOMB_PIXELS.search(str(error))
    if match is not None:
        pixels = int(match.group(1))
        if pixels > max_pixels:
            return ImageDecodeError(label, f"image has {pixels} pixels, more than the limit of {max_pixels}")
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        return ImageDecodeError(
            label, f"image has {pixels} pixels, more than Pillow's decompression-bomb limit of {limit}"
        )
    return ImageDecodeError(label, f"image has too many pixels ({_describe(error)})")


def _decode_pixels(image: Image.Image, label: str, max_pixels: int) -> None:
    """Decode now, so that truncated or corrupt data fails here and not in a later transform."""
    try:
        with _strict_truncation(), warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except Image.DecompressionBombError as error:
        raise _too_many_pixels_from_pillow(label, error, max_pixels) from None
    except CORRUPT_DATA_ERRORS as error:
        raise ImageDecodeError(label, f"truncated or corrupt image data ({_describe(error)})") from None


def _normalise(image: Image.Image, label: str) -> Image.Image:
    """Loaded image of any mode -> upright 8-bit RGB, a new image independent of the input."""
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not cost us an otherwise good image
        upright = image.copy()
    assert upright is not None
    try:
        return to_rgb(upright)
    except PixelError as error:
        raise ImageDecodeError(label, str(error)) from None
    except CORRUPT_DATA_ERRORS as error:
        raise ImageDecodeError(label, f"cannot convert colour mode {image.mode} to RGB ({_describe(error)})") from None


def _format_from_signature(head: bytes) -> str | None:
    for signature, format_name in _SIGNATURES:
        if head.startswith(signature):
            return format_name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:2] == b"BM" and head[6:10] == b"\x00\x00\x00\x00":  # "BM" alone is too common in text
        return "BMP"
    return None


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return text or type(error).__name__
