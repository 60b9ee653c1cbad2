"""The page kit's figures and its Jinja2 environment: PNGs, and values escaped unless they are the kit's images."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from dermlens.report import figures
from dermlens.report.html import environment, img, write_page

CONFUSION = {"classes": ["a<x>", "b"], "counts": [[3, 1], [0, 4]], "row_normalised": [[0.75, 0.25], [0, 1]]}
BINS = {"edges": [0, 0.5, 1], "confidence": [0.3, 0.8], "accuracy": [0.25, 0.9], "count": [4, 4]}
CALIBRATION = {name: {"n": 8, "ece": 0.07, "nll": 0.4, "accuracy": 0.6, "mean_confidence": 0.55, "reliability": BINS}
               for name in ("uncalibrated", "temperature_scaled")}
ROC_TASK = {"auc": 0.75, "auc_ci95": [0.5, 0.9], "roc": {"fpr": [0, 0, 0.5, 0.5, 1], "tpr": [0, 0.5, 0.5, 1, 1]}, "readers": []}


def _png_ok(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
        return im.size


def test_figures_are_png():
    assert min(_png_ok(figures.roc_figure(ROC_TASK, "t"))) > 100
    assert min(_png_ok(figures.confusion_figure(CONFUSION, "3-way"))) > 100
    assert min(_png_ok(figures.reliability_figure(CALIBRATION))) > 100
    rng = np.random.default_rng(0)
    assert min(_png_ok(figures.tsne_figure(rng.normal(size=(30, 2)), np.repeat(["a", "b", "c"], 10)))) > 100




def test_templates_escape_every_value_but_the_kit_s_images(tmp_path):
    env = environment()
    page = env.from_string('{% import "kit.html" as kit %}{{ name }} {{ kit.table(["file"], rows) }}').render(
        name="<script>x</script>", rows=[["a&b<i>.jpg"], [img(b"png", "alt")]])
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "a&amp;b&lt;i&gt;.jpg" in page and '<img alt="alt" src="data:image/png;base64,' in page
    written = write_page(tmp_path / "p.html", "<title & more>", "<p>made by its caller</p>").read_text()
    assert "<title>&lt;title &amp; more&gt;</title>" in written and "<p>made by its caller</p>" in written
