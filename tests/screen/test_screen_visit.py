"""The visit report: one page per patient naming each lesion, linking its crop, escaping what comes from outside,
and an empty but valid page when a photo has no lesion."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
from PIL import Image

from dermlens.screen.screener import Lesion, PhotoResult, write_outputs
from dermlens.screen.visit import page_name, write_visit_report

VOID = {"meta", "img", "br", "hr", "input", "link"}


class Page(HTMLParser):
    """Collects links, images and text, and checks that every opened tag is closed in order."""

    def __init__(self):
        super().__init__()
        self.stack, self.links, self.images, self.text, self.errors = [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a":
            self.links.append(attrs.get("href"))
        if tag == "img":
            self.images.append(attrs.get("src"))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert not page.errors and not page.stack, (page.errors, page.stack)
    return page


def page_text(page: Page) -> str:
    return re.sub(r"\s+", " ", "".join(page.text))


def lesion(rank, box, suspicious=False):
    return Lesion(box=box, p_lesion=0.9, p_malignant=0.7 if suspicious else 0.1, suspicious=suspicious,
                  top_class="nv<script>", probabilities={}, diameter=20.0, contrast=8.0, rank=rank,
                  ugly_duckling_score=1.0 / rank)


def test_each_lesion_is_named_and_links_its_crop_and_outside_text_is_escaped(tmp_path):
    name = 'back <b>&"1.png'
    photo = tmp_path / name
    Image.fromarray(np.full((120, 160, 3), 180, np.uint8)).save(photo)
    result = PhotoResult(image=str(photo), patient="Ann <x>", width=160, height=120, candidates=3,
                         lesions=[lesion(2, [10, 10, 30, 30]), lesion(1, [60, 40, 90, 70], True), lesion(3, [120, 80, 140, 100])])
    out = tmp_path / "out"
    write_outputs(result, out, top_crops=1, stem="back")  # the outputs keep one crop; the report needs all three
    pages = write_visit_report([result], ["back"], out)
    assert [p.name for p in pages] == [page_name("Ann <x>")] == ["visit-Ann__x_.html"]
    raw = pages[0].read_text(encoding="utf-8")
    assert "<b>&" not in raw and "<script>" not in raw and "<x>" not in raw
    page = parse(pages[0])
    text = page_text(page)
    assert "3 lesions" in text and "1 suspicious" in text and name in text and "Ann <x>" in text
    crops = [unquote(link) for link in page.links if "crops" in link]
    assert crops == [f"back.crops/rank{k}.jpg" for k in (1, 2, 3)]  # ranked, each named and linked
    assert all((out / c).is_file() for c in crops)
    for k in (1, 2, 3):
        assert f"#{k}" in text
    assert "back.annotated.jpg" in [unquote(src) for src in page.images]
    assert text.index("suspicious: refer") < text.index("not suspicious")  # rank 1 (suspicious) comes first


def test_a_photo_without_lesions_gives_an_empty_valid_page(tmp_path):
    photo = tmp_path / "clear.png"
    Image.fromarray(np.full((60, 80, 3), 200, np.uint8)).save(photo)
    result = PhotoResult(image=str(photo), patient="patient", width=80, height=60)
    write_outputs(result, tmp_path, stem="clear")
    (page_path,) = write_visit_report([result], ["clear"], tmp_path)
    page = parse(page_path)
    text = page_text(page)
    assert "0 lesions" in text and "No lesion found" in text
    assert not [link for link in page.links if "crops" in link]
    assert page_path.read_text().startswith("<!doctype html>")


def test_patients_get_one_page_each_and_a_bad_photo_is_named(tmp_path):
    good = tmp_path / "a.png"
    Image.fromarray(np.full((60, 80, 3), 200, np.uint8)).save(good)
    results = [PhotoResult(image=str(good), patient="p1", lesions=[lesion(1, [5, 5, 25, 25])]),
               PhotoResult(image=str(tmp_path / "broken.jpg"), patient="p2", error="not an image")]
    for r, stem in zip(results, ["a", "broken"]):
        write_outputs(r, tmp_path, stem=stem)
    pages = write_visit_report(results, ["a", "broken"], tmp_path)
    assert sorted(p.name for p in pages) == ["visit-p1.html", "visit-p2.html"]
    text = page_text(parse(tmp_path / "visit-p2.html"))
    assert "broken.jpg" in text and "not an image" in text and "0 lesions" in text
