"""Fuzz the image decoder: mutated JPEG, PNG, TIFF, WebP and BMP bytes through ``dermlens.data.io.load_image``.

    python benchmarks/decoder_fuzz.py [--inputs 20000] [--seed 0]

Every input is a valid photo-like image encoded in one format, then mutated: bytes flipped, runs overwritten with
random or 0xFF bytes, the file truncated, a chunk duplicated or deleted, header fields (width, height) set to large
values. ``load_image`` must either return an 8-bit RGB image or raise ``ImageDecodeError`` (the one error type that
names the file and the problem); anything else escaping is a failure and is printed with its input's recipe. Memory
is sampled (peak RSS) to show it stays bounded. Prints inputs tried, outcomes per format and mutation, and escapes.
"""
from __future__ import annotations

import argparse
import io
import resource
import sys
import time
import warnings
from collections import Counter

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from dermlens.data.io import ImageDecodeError, load_image

FORMATS = {"JPEG": {"quality": 85}, "PNG": {}, "TIFF": {}, "WEBP": {"quality": 80}, "BMP": {}}
MUTATIONS = ("flip_bits", "overwrite_run", "truncate", "duplicate_chunk", "delete_chunk", "ff_run", "huge_dims")


def seed_image(rng: np.random.Generator, fmt: str) -> bytes:
    h, w = int(rng.integers(8, 160)), int(rng.integers(8, 160))
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), (xx + yy) % 256], -1)
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    mode = rng.choice(["RGB", "L", "RGBA"]) if fmt in ("PNG", "TIFF", "WEBP") else rng.choice(["RGB", "L"])
    image = Image.fromarray(pixels).convert(str(mode))
    buffer = io.BytesIO()
    image.save(buffer, fmt, **FORMATS[fmt])
    return buffer.getvalue()


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    n = len(b)
    if kind == "flip_bits":
        for _ in range(int(rng.integers(1, 10))):
            i = int(rng.integers(0, n))
            b[i] ^= 1 << int(rng.integers(0, 8))
    elif kind == "overwrite_run":
        i, k = int(rng.integers(0, n)), int(rng.integers(1, 64))
        b[i:i + k] = rng.integers(0, 256, len(b[i:i + k])).astype(np.uint8).tobytes()
    elif kind == "ff_run":
        i, k = int(rng.integers(0, n)), int(rng.integers(1, 32))
        b[i:i + k] = b"\xff" * len(b[i:i + k])
    elif kind == "truncate":
        b = b[: int(rng.integers(0, n))]
    elif kind == "duplicate_chunk":
        i, k = int(rng.integers(0, n)), int(rng.integers(1, 256))
        b[i:i] = b[i:i + k]
    elif kind == "delete_chunk":
        i, k = int(rng.integers(0, n)), int(rng.integers(1, 256))
        del b[i:i + k]
    elif kind == "huge_dims":  # width/height-like 16/32-bit fields in the first 40 bytes set large
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(0, min(40, max(n - 2, 1))))
            b[i:i + 2] = b"\x7f\xff"
    return bytes(b)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    warnings.simplefilter("ignore")  # Pillow warns about every odd TIFF tag; the outcome is what counts
    outcomes, escapes = Counter(), []
    started, rss_start = time.perf_counter(), None
    for k in tqdm(range(args.inputs), desc="decoder fuzz", unit="input"):
        fmt = str(rng.choice(list(FORMATS)))
        kind = str(rng.choice(MUTATIONS))
        data = mutate(seed_image(rng, fmt), kind, rng)
        try:
            image = load_image(data)
            assert image.mode == "RGB", image.mode
            outcomes[fmt, kind, "decoded"] += 1
        except ImageDecodeError:
            outcomes[fmt, kind, "ImageDecodeError"] += 1
        except Exception as error:  # noqa: BLE001 - what this benchmark looks for
            outcomes[fmt, kind, "ESCAPED"] += 1
            escapes.append(f"input {k} ({fmt}, {kind}): {type(error).__name__}: {error}")
        if k == 200:
            rss_start = peak_rss_mb()
    seconds = time.perf_counter() - started
    print(f"inputs tried: {args.inputs} in {seconds:.0f} s (seed {args.seed})")
    for fmt in FORMATS:
        row = {m: (outcomes[fmt, m, "decoded"], outcomes[fmt, m, "ImageDecodeError"], outcomes[fmt, m, "ESCAPED"]) for m in MUTATIONS}
        total = [sum(v[i] for v in row.values()) for i in range(3)]
        print(f"  {fmt:5s} decoded {total[0]:6d}   ImageDecodeError {total[1]:6d}   other exception {total[2]:4d}")
    print(f"peak RSS: {rss_start or peak_rss_mb():.0f} MB after 200 inputs, {peak_rss_mb():.0f} MB at the end")
    print(f"escapes (anything but ImageDecodeError): {len(escapes)} (target: 0)")
    for line in escapes[:20]:
        print("  " + line)
    return 1 if escapes else 0


if __name__ == "__main__":
    sys.exit(main())
