"""Suite-wide fixtures: one small synthetic dataset and ONE tiny trained model, made once per test session.

Training is cheap at this size (64 px, a few steps of EfficientNet-Lite0 from its ImageNet weights: about a second
on two cores), but loading, splitting and training once keeps the predict tests fast and consistent with each
other. ``max_class_size=1`` gives one training class per synthetic diagnosis (5 classes); with the default 1000 the
partition of 60 images would be a single class at the root, and every prediction would be the same.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from dermlens.data.datasets import load_records
from dermlens.data.splits import grouped_split
from dermlens.data.synthetic import make_synthetic_dataset
from dermlens.train.recipe import TrainConfig, TrainResult, train

TINY_TRAIN_CONFIG = TrainConfig(
    image_size=64,
    epochs=2,
    batch_size=16,
    max_steps_per_epoch=3,
    num_workers=0,
    max_class_size=1,
    lr=3e-4,  # gentle: a few large Adam steps leave the ImageNet features chaotic (outputs jump on JPEG noise)
    warmup_epochs=0.3,
    balance="sqrt",  # the suite's tiny model as it was trained before "tree" became the default
)


@pytest.fixture(scope="session", autouse=True)
def private_export_cache(tmp_path_factory):
    """ONNX exports (``engine="auto"`` makes one on first use) go to a private cache, never to the user's ~/.cache."""
    cache = tmp_path_factory.mktemp("dermlens-cache")
    saved = os.environ.get("DERMLENS_CACHE")
    os.environ["DERMLENS_CACHE"] = str(cache)
    yield cache
    if saved is None:
        os.environ.pop("DERMLENS_CACHE", None)
    else:
        os.environ["DERMLENS_CACHE"] = saved


@pytest.fixture(scope="session")
def synthetic_labels_csv(tmp_path_factory) -> Path:
    """labels.csv of a 60-image synthetic dataset (5 classes x 12 images, 64 px, groups of 2-3 views)."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), n_per_class=12, size=64, seed=0)


@pytest.fixture(scope="session")
def synthetic_parts(synthetic_labels_csv) -> dict:
    """Grouped train/val/test parts of the synthetic dataset."""
    return grouped_split(load_records(synthetic_labels_csv), val_fraction=0.2, test_fraction=0.2, seed=0)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, synthetic_parts) -> TrainResult:
    """The one model the predict tests share; its folder is ``tiny_model.model_dir``. Treat it as read-only."""
    out = tmp_path_factory.mktemp("tiny-run")
    return train(synthetic_parts["train"], synthetic_parts["val"], out, TINY_TRAIN_CONFIG, progress=False)


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model) -> Path:
    return tiny_model.model_dir


@pytest.fixture(scope="session")
def two_modality_model_dir(tmp_path_factory, tiny_model_dir, synthetic_parts) -> Path:
    """The tiny model with what the bundled one has besides: a modality recogniser (an embedding head), one
    operating point per modality and a fitted photo gate, attached through ``dermlens.models.folder``. Its answers
    mean nothing; its folder has every part a model folder can have. Treat it as read-only."""
    import numpy as np
    from PIL import Image

    from dermlens.gate import Gate, GateThresholds
    from dermlens.gate.gate import OodModel
    from dermlens.models.embedding_head import EmbeddingHead
    from dermlens.models.folder import copy_folder, update_config
    from dermlens.models.modality import HEAD_NAME
    from dermlens.predict import Predictor

    folder = copy_folder(tiny_model_dir, tmp_path_factory.mktemp("two-modality") / "model")
    paths = [str(r.path) for part in synthetic_parts.values() for r in part]
    rng = np.random.default_rng(0)
    not_skin = [Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(0, 255, 3))) for _ in range(10)]
    not_skin += [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(10)]
    plain = Predictor(folder, engine="torch", gate=False)
    skin = np.stack([a.embedding for a in plain.analyse(paths, with_embedding=True)])
    other = np.stack([a.embedding for a in plain.analyse(not_skin, with_embedding=True)])
    modality = EmbeddingHead(C=0.1).fit(skin, np.array(["dermoscopic", "clinical"])[np.arange(len(skin)) % 2])
    modality.save(folder, HEAD_NAME)
    skin_head = EmbeddingHead(C=0.1, class_weight="balanced").fit(np.r_[skin, other], np.r_[np.ones(len(skin)), np.zeros(len(other))])
    ood = OodModel.fit(skin.astype(np.float64), components=8)
    Gate(GateThresholds(min_p_skin=0.5, max_ood_distance=float(3 * ood.distance(skin).max())), skin_head, ood,
         {"fitted_on": "tests: synthetic skin, flat and noise pictures"}).save(folder)
    update_config(folder, modality_head={"file": f"{HEAD_NAME}.safetensors", "classes": ["dermoscopic", "clinical"]},
                  operating_points={m: {"node": "malignant", "threshold": t, "chosen_on": "tests"}
                                    for m, t in (("dermoscopic", 0.3), ("clinical", 0.999))})
    return folder


@pytest.fixture(scope="session")
def predictor(tiny_model_dir):
    from dermlens.predict import Predictor

    return Predictor(tiny_model_dir)


# ---------------------------------------------------------------------------------------------------------------
# Image files for the predict tests: one source photo in every mode and orientation, and every kind of bad file
# ---------------------------------------------------------------------------------------------------------------

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_rgb16(pixels) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one): scanners and raw converters make these."""
    import struct
    import zlib

    height, width, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    chunks = _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


class ImageCases:
    """``good``: name -> (file, the RGB upright file it must be classified like, tolerance on probabilities).
    ``bad``: name -> (file, words the error must contain). ``source``: the RGB upright PIL image."""

    def __init__(self, root: Path):
        import io
        import struct
        import zlib

        import numpy as np
        from PIL import Image

        from dermlens.data.synthetic import render_lesion

        self.root = root
        # Not square, so that a missed EXIF rotation changes the centre crop as well as the orientation.
        source = render_lesion("melanoma", np.random.default_rng(0), size=96).crop((0, 12, 96, 84))
        self.source = source
        rgb = root / "rgb.png"
        source.save(rgb)
        gray = source.convert("L")
        gray_rgb = root / "gray_as_rgb.png"
        gray.convert("RGB").save(gray_rgb)
        source.save(root / "rgb.jpg", quality=95)

        gray.save(root / "gray.png")
        Image.fromarray(np.asarray(gray).astype(np.uint16) * 257).save(root / "gray16.png")  # mode I;16
        (root / "rgb16.png").write_bytes(_png_rgb16(np.asarray(source).astype(np.uint16) * 257))
        source.convert("CMYK").save(root / "cmyk.tif")
        source.convert("CMYK").save(root / "cmyk.jpg", quality=100)
        # Its RGB equivalent: the standard CMYK -> RGB formula on the samples the JPEG holds (lossy, so not `source`).
        cmyk = np.asarray(Image.open(root / "cmyk.jpg")).astype(np.float64)
        ink, black = cmyk[..., :3], cmyk[..., 3:]
        Image.fromarray(np.rint((255 - ink) * (255 - black) / 255).astype(np.uint8)).save(root / "cmyk_jpeg_as_rgb.png")
        rgba = np.array(source.convert("RGBA"))
        rgba[:12, :12, 3] = 0  # a transparent corner, and a half-transparent band: composited on white
        rgba[12:24, :12, 3] = 128
        Image.fromarray(rgba).save(root / "rgba.png")
        white = Image.alpha_composite(Image.new("RGBA", source.size, (255, 255, 255, 255)), Image.fromarray(rgba))
        white.convert("RGB").save(root / "rgba_on_white.png")
        for orientation, stored in ((6, source.transpose(Image.Transpose.ROTATE_90)),
                                    (3, source.transpose(Image.Transpose.ROTATE_180)),
                                    (8, source.transpose(Image.Transpose.ROTATE_270))):
            exif = Image.Exif()
            exif[0x0112] = orientation  # the camera's "rotate me to view" tag
            stored.save(root / f"exif{orientation}.png", exif=exif.tobytes())
        exif = Image.Exif()
        exif[0x0112] = 6
        source.transpose(Image.Transpose.ROTATE_90).save(root / "exif6.jpg", exif=exif.tobytes(), quality=95)
        # Its upright equivalent: the pixels the JPEG holds, turned as tag 6 says (90 degrees clockwise).
        Image.open(root / "exif6.jpg").transpose(Image.Transpose.ROTATE_270).save(root / "exif6_jpeg_upright.png")
        self.uncorrected_exif6 = root / "exif6_ignored.png"  # what a reader that ignores EXIF would see
        source.transpose(Image.Transpose.ROTATE_90).save(self.uncorrected_exif6)

        self.good = {
            "rgb": (rgb, rgb, 1e-6),
            "grayscale": (root / "gray.png", gray_rgb, 1e-5),
            "grayscale_16_bit": (root / "gray16.png", gray_rgb, 1e-5),
            "rgb_16_bit": (root / "rgb16.png", rgb, 1e-5),
            "cmyk_tiff": (root / "cmyk.tif", rgb, 1e-5),
            "cmyk_jpeg": (root / "cmyk.jpg", root / "cmyk_jpeg_as_rgb.png", 1e-5),
            "rgba": (root / "rgba.png", root / "rgba_on_white.png", 1e-5),
            "exif_rotated_90": (root / "exif6.png", rgb, 1e-5),
            "exif_rotated_180": (root / "exif3.png", rgb, 1e-5),
            "exif_rotated_270": (root / "exif8.png", rgb, 1e-5),
            "exif_rotated_jpeg": (root / "exif6.jpg", root / "exif6_jpeg_upright.png", 1e-5),
        }

        bad = root / "bad"
        bad.mkdir()
        (bad / "empty.jpg").write_bytes(b"")
        jpeg = (root / "rgb.jpg").read_bytes()
        (bad / "truncated.jpg").write_bytes(jpeg[: len(jpeg) * 6 // 10])
        png = bytearray(rgb.read_bytes())
        start = png.find(b"IDAT") + 8
        png[start:start + 200] = bytes(200)  # zeroed compressed data: a broken stream
        (bad / "corrupt.png").write_bytes(bytes(png))
        (bad / "not_an_image.jpg").write_text("this is a text file, not a photo\n")
        tiny = io.BytesIO()
        Image.new("RGB", (1, 1)).save(tiny, "PNG")
        huge = bytearray(tiny.getvalue())
        header = struct.pack(">IIBBBBB", 12000, 9000, 8, 2, 0, 0, 0)  # 108 megapixels claimed by the header
        huge[16:29] = header
        huge[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header) & 0xFFFFFFFF)
        (bad / "huge.png").write_bytes(bytes(huge))
        self.bad = {
            "empty": (bad / "empty.jpg", ["empty"]),
            "truncated": (bad / "truncated.jpg", ["truncated"]),
            "corrupt": (bad / "corrupt.png", ["corrupt"]),
            "not_an_image": (bad / "not_an_image.jpg", ["not an image"]),
            "over_100_megapixels": (bad / "huge.png", ["108000000 pixels", "limit"]),
            "missing": (bad / "missing.jpg", ["not found"]),
        }


@pytest.fixture(scope="session")
def image_cases(tmp_path_factory) -> ImageCases:
    return ImageCases(tmp_path_factory.mktemp("image-cases"))


@pytest.fixture()
def killed_after_first_checkpoint(monkeypatch):
    """``with killed_after_first_checkpoint(): train(...)``: the run dies (KeyboardInterrupt, as a kill) right after
    writing its first checkpoint, the way every trainer's resume tests need it."""
    from dermlens.train import loop

    real_save = loop.save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def killed():
        monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            monkeypatch.setattr(loop, "save_checkpoint", real_save)

    return killed
