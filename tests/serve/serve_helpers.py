"""Helpers for the web service tests (imported by conftest.py and the tests): photos good and bad, a live server."""
from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from dermlens.data.synthetic import render_lesion

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "serve"  # git-ignored (tests/artifacts/)


# ---- photos


def lesion_photo(label: str = "melanoma", seed: int = 0, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A synthetic lesion, non-square like a phone photo."""
    square = render_lesion(label, np.random.default_rng(seed), size=max(size))
    return square.resize(size, Image.BILINEAR)


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int, height: int, valid_data: bool = True) -> bytes:
    """A 1-bit grayscale PNG of ``width`` x ``height`` zero pixels: a few kB on disk, width*height pixels decoded.

    ``valid_data=False`` keeps the header but makes the pixel data garbage: decoding it would fail as corrupt, so an
    error about the pixel count proves that the file was refused from its header, before any decoding.
    """
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    if valid_data:
        row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
        compressor = zlib.compressobj(9)
        pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    else:
        pixels = b"not zlib data at all" * 8
    return b"\x89PNG\r\n\x1a\n" + header + _png_chunk(b"IDAT", pixels) + _png_chunk(b"IEND", b"")


# ---- server


@contextmanager
def serving(app):
    """Run ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yields the base URL."""
    with serving_with(app) as url:
        yield url


@contextmanager
def serving_with(app, log_level: str = "warning", after_config=None):
    """``serving`` at another log level; ``after_config()`` runs once uvicorn.Config has set its logging up (as
    `dermlens serve` installs its log filters then)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level=log_level, lifespan="on")
    if after_config:
        after_config()
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
