"""The photos the gate is fitted and measured on: real skin, non-skin, and skin spoiled by known amounts.

    real skin   every dataset under ``../shared/data`` (both modalities). Fit part: the dataset's own training
                split (HAM10000, ISIC 2017, DermNet, PAD-UFES-20); test part: HAM10000/DermNet/PAD-UFES-20
                ``test``, ISIC 2017 ``val``, and all of PH2 and SD-198 (external: never fitted on). A dataset of
                another name with a split column uses train/test alike; one without, 40%/60% of its lesions.
    non-skin    everyday photos (``../shared/data/nonskin``: one per ImageNet class; each photo and random
                crops of it), scikit-image's sample photos (crops, rotations, scalings, grey and colour) and
                generated pictures (flat colours, noise, text, gradients, stripes). Everyday photos are validated
                by holding out whole groups of classes (benchmarks/gate.py); of scikit-image's, the test part uses
                *other source photos* than the fit part (the cat, the astronaut, the coffee, the rocket, the Hubble
                field and the retina are never fitted on), and generated pictures from other seeds.
    wide-field  photos of a wider area of skin with several lesions (a back, an arm): the screening benchmark's
                generated patients (``benchmarks/screen_benchmark.py``), each whole and as a crop of 60-90%.
    degraded    real skin photos blurred (Gaussian, motion), over-/under-exposed, downscaled and JPEG-crushed.
"""
from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from dermlens.extras import require

# Source photos, split once: the test part is never fitted on (``cat`` is ``chelsea``, so both are test).
NON_SKIN_FIT_SOURCES = ("brick", "camera", "cell", "checkerboard", "coins", "colorwheel", "grass", "gravel", "horse",
                        "logo", "microaneurysms", "moon", "page", "text", "stereo_motorcycle",
                        "sklearn:china.jpg", "sklearn:flower.jpg")
NON_SKIN_TEST_SOURCES = ("chelsea", "cat", "astronaut", "coffee", "rocket", "hubble_deep_field", "retina",
                         "immunohistochemistry", "clock")
GENERATED_KINDS = ("flat", "noise", "text", "gradient", "stripes")
FIT_SHARE_WITHOUT_SPLIT = 0.4
TEST_SPLITS = {"ham10000": "test", "isic2017": "val", "dermnet": "test", "pad_ufes": "test"}
FIT_SPLITS = {"ham10000": "train", "isic2017": "train", "dermnet": "train", "pad_ufes": "train"}
EXTERNAL = ("ph2", "sd198_clinical")  # never fitted on: their test part is all of them
# Thresholds are set on photos the classifier was not trained on: the embeddings of its own training photos sit
# deeper inside "skin" than any new photo's, so a threshold stopping 1% of them stops more of new photos.
THRESHOLD_SPLITS = {"ham10000": "val", "dermnet": "val", "pad_ufes": "val"}


@dataclass
class Photo:
    name: str
    image: Image.Image
    kind: str = ""  # the dataset, the source photo or generated kind, "everyday", "wide_field", or the degradation
    modality: str = ""
    level: str = ""  # degradation amount, e.g. "sigma=4"; for everyday photos the variant (0: the photo itself)
    label: str = ""  # real skin: the taxonomy node (melanoma-vs-nevus AUC); everyday photos: the ImageNet wnid


# ---------------------------------------------------------------------------------------------------------------
# Real skin
# ---------------------------------------------------------------------------------------------------------------


def _in_fit_part(group: str) -> bool:
    digest = hashlib.sha1(group.encode()).digest()
    return digest[0] / 256 < FIT_SHARE_WITHOUT_SPLIT


def skin_records(data_dirs, part: str, per_dataset: int, seed: int = 0) -> list:
    """Up to ``per_dataset`` records of each dataset's ``part`` ("fit", "threshold" or "test"), drawn reproducibly.
    The threshold part is a dataset's validation split (none for a dataset without one)."""
    from dermlens.data.datasets import load_records

    if part not in ("fit", "threshold", "test"):
        raise ValueError(f"part must be fit, threshold or test; got {part!r}")
    chosen = []
    for folder in data_dirs:
        folder = Path(folder)
        records = load_records(folder)
        name = folder.name
        if part == "threshold":
            pool = [r for r in records if r.split == THRESHOLD_SPLITS[name]] if name in THRESHOLD_SPLITS else []
        elif name in FIT_SPLITS:
            wanted = FIT_SPLITS[name] if part == "fit" else TEST_SPLITS[name]
            pool = [r for r in records if r.split == wanted]
        elif name in EXTERNAL:
            pool = [] if part == "fit" else records
        elif any(r.split for r in records):
            pool = [r for r in records if r.split == ("train" if part == "fit" else "test")]
        else:
            pool = [r for r in records if _in_fit_part(r.group or str(r.path)) == (part == "fit")]
        rng = random.Random(f"{seed}:{name}:{part}")
        chosen += [(name, r) for r in rng.sample(pool, min(per_dataset, len(pool)))]
    return chosen


def load_skin(chosen) -> list[Photo]:
    from dermlens.data.io import load_image

    return [Photo(str(r.path), load_image(r.path), kind=name, modality=r.modality, label=r.node) for name, r in chosen]


# ---------------------------------------------------------------------------------------------------------------
# Not skin
# ---------------------------------------------------------------------------------------------------------------


def _skimage_photo(name: str) -> np.ndarray:
    if name.startswith("sklearn:"):  # scikit-learn's two sample photos (a temple, a flower)
        from sklearn.datasets import load_sample_image

        return np.asarray(load_sample_image(name.split(":", 1)[1]))
    skimage_data = require("skimage.data", "gate", "dermlens gate fit")
    image = getattr(skimage_data, name)()
    if name == "stereo_motorcycle":
        image = image[0]
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    return image


def _variants(image: Image.Image, rng: np.random.Generator, n: int) -> Iterator[Image.Image]:
    """The photo itself, then random crops (30-100% of the side), rotations and scalings."""
    yield image
    for _ in range(n - 1):
        w, h = image.size
        side = int(min(w, h) * rng.uniform(0.3, 1.0))
        left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        out = image.crop((left, top, left + side, top + side)).rotate(float(rng.choice([0, 90, 180, 270])))
        scale = rng.uniform(0.6, 1.6)
        yield out.resize((max(96, int(side * scale)),) * 2, Image.BILINEAR)


def generated(kind: str, rng: np.random.Generator, size: int = 256) -> Image.Image:
    """A picture of nothing: one flat colour, noise, text, a gradient or stripes, in random colours."""
    colour = lambda: tuple(int(c) for c in rng.integers(0, 256, 3))  # noqa: E731
    if kind == "flat":
        return Image.new("RGB", (size, size), colour())
    if kind == "noise":
        scale = int(rng.choice([1, 4, 16]))
        small = rng.integers(0, 256, (size // scale, size // scale, 3), dtype=np.uint8)
        return Image.fromarray(small).resize((size, size), Image.NEAREST if rng.random() < 0.5 else Image.BILINEAR)
    if kind == "text":
        image = Image.new("RGB", (size, size), colour())
        draw, font = ImageDraw.Draw(image), ImageFont.load_default()
        ink = colour()
        words = ["dermlens", "photo", "invoice", "Lorem ipsum", "2026", "total", "hello", "skin?", "NOTE"]
        for y in range(4, size, int(rng.integers(10, 24))):
            draw.text((int(rng.integers(0, 20)), y), " ".join(rng.choice(words, 4)), fill=ink, font=font)
        return image
    if kind == "gradient":
        t = np.linspace(0, 1, size)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, size)[:, None, None]
        a, b = np.array(colour(), float), np.array(colour(), float)
        return Image.fromarray(np.broadcast_to(a + t * (b - a), (size, size, 3)).astype(np.uint8))
    if kind == "stripes":
        period = int(rng.integers(4, 40))
        x = (np.arange(size) // period) % 2
        rows = np.where(x[None, :, None] > 0, np.array(colour()), np.array(colour()))
        return Image.fromarray(np.broadcast_to(rows, (size, size, 3)).astype(np.uint8))
    raise ValueError(f"unknown generated kind {kind!r}; one of {GENERATED_KINDS}")


def non_skin_photos(part: str, variants_per_photo: int = 12, generated_per_kind: int = 16) -> list[Photo]:
    """Non-skin pictures of the fit or the test part (different source photos; generated with other seeds)."""
    sources = NON_SKIN_FIT_SOURCES if part == "fit" else NON_SKIN_TEST_SOURCES
    rng = np.random.default_rng(0 if part == "fit" else 1)
    photos = []
    for source in sources:
        base = Image.fromarray(_skimage_photo(source)).convert("RGB")
        for k, image in enumerate(_variants(base, rng, variants_per_photo)):
            photos.append(Photo(f"skimage:{source}#{k}", image, kind=f"skimage:{source}"))
    for kind in GENERATED_KINDS:
        for k in range(generated_per_kind):
            photos.append(Photo(f"generated:{kind}#{k}", generated(kind, rng), kind=f"generated:{kind}"))
    return photos


EVERYDAY_LIST = "photos.csv"


def everyday_photos(folder: str | Path, variants_per_photo: int = 3, seed: int = 0) -> list[Photo]:
    """The everyday photos of ``folder`` (``photos.csv``: image, imagenet_class, wnid): each photo itself (level
    "0") and random crops, rotations and scalings of it. ``variants_per_photo=1``: the photos only."""
    import csv

    from dermlens.data.io import load_image

    folder = Path(folder)
    listing = folder / EVERYDAY_LIST
    if not listing.is_file():
        raise FileNotFoundError(f"{listing}: no list of everyday photos here (expected {EVERYDAY_LIST} with image, "
                                "imagenet_class and wnid)")
    rng = np.random.default_rng(seed)
    photos = []
    with open(listing, newline="") as f:
        for row in csv.DictReader(f):
            base = load_image(folder / row["image"])
            for k, image in enumerate(_variants(base, rng, variants_per_photo)):
                photos.append(Photo(f"{row['image']}#{k}", image, kind="everyday", level=str(k), label=row["wnid"]))
    return photos


def wide_field_photos(folder: str | Path, seed: int = 0) -> list[Photo]:
    """Every ``*.jpg``/``*.png`` of ``folder`` (a wide-field photo each), whole and as one random 60-90% crop."""
    from dermlens.data.io import load_image

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise FileNotFoundError(f"{folder}: no wide-field photos (.jpg/.png) here; make some with "
                                "benchmarks/screen_benchmark.py --split train")
    rng = np.random.default_rng(seed)
    photos = []
    for path in files:
        image = load_image(path)
        w, h = image.size
        share = rng.uniform(0.6, 0.9)
        cw, ch = int(w * share), int(h * share)
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        photos += [Photo(str(path), image, kind="wide_field", level="0"),
                   Photo(f"{path}#crop", image.crop((left, top, left + cw, top + ch)), kind="wide_field", level="1")]
    return photos


# ---------------------------------------------------------------------------------------------------------------
# Degraded skin
# ---------------------------------------------------------------------------------------------------------------

# (kind, level, clearly degraded?): what the benchmark applies. Blur sigmas are in pixels *at the model's input
# size* (the photo is blurred after scaling its shorter side to that size), exposure is a gain on linear-ish pixels.
DEGRADATIONS = (
    ("gaussian_blur", 1.0, False), ("gaussian_blur", 2.0, False), ("gaussian_blur", 4.0, True), ("gaussian_blur", 8.0, True),
    ("motion_blur", 9, False), ("motion_blur", 17, True),
    ("overexposed", 2.5, True), ("overexposed", 4.0, True),
    ("underexposed", 0.1, True), ("underexposed", 0.04, True),
    ("downscaled", 64, True), ("downscaled", 32, True),
    ("jpeg", 10, False), ("jpeg", 3, False),
)


def degrade(image: Image.Image, kind: str, level: float, model_size: int = 224) -> Image.Image:
    """The photo spoiled by a known amount (see ``DEGRADATIONS``)."""
    image = image.convert("RGB")
    if kind in ("gaussian_blur", "motion_blur"):
        scale = model_size / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
        if kind == "gaussian_blur":
            return image.filter(ImageFilter.GaussianBlur(level))
        cv2 = require("cv2", "gate", "the gate benchmark's motion blur")
        kernel = np.zeros((int(level), int(level)), np.float32)
        kernel[int(level) // 2, :] = 1 / int(level)
        return Image.fromarray(cv2.filter2D(np.asarray(image), -1, kernel, borderType=cv2.BORDER_REFLECT))
    if kind in ("overexposed", "underexposed"):
        pixels = np.asarray(image).astype(np.float32) / 255
        return Image.fromarray((np.clip(pixels * level, 0, 1) * 255).round().astype(np.uint8))
    if kind == "downscaled":
        scale = level / min(image.size)
        return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    if kind == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(level))
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    raise ValueError(f"unknown degradation {kind!r}")


def centre_clipped_share(image: Image.Image, model_size: int = 224) -> tuple[float, float]:
    """(share clipped white, share clipped black) of the central region: the lesion's share that exposure lost."""
    pixels = np.asarray(image.convert("RGB")).astype(np.float32) / 255
    h, w = pixels.shape[:2]
    centre = pixels[h // 4: h - h // 4, w // 4: w - w // 4]
    return float((centre.min(-1) >= 0.97).mean()), float((centre.max(-1) <= 0.03).mean())


__all__ = ["Photo", "DEGRADATIONS", "GENERATED_KINDS", "degrade", "everyday_photos", "generated", "load_skin",
           "non_skin_photos", "skin_records", "centre_clipped_share", "wide_field_photos"]
