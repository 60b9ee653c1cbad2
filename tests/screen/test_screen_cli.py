"""`dermlens screen PHOTO... --out DIR` end to end on generated photos: JSON, annotated image, crops, bad photos.

The bundled classifier is loaded once for the module (one CLI run). The lesion head here is a hand-made one that
keeps every candidate, so the test knows exactly which lesions must come out; the bundled head is tested in
test_screen_lesion_head.py.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dermlens.cli import app
from dermlens.screen.lesion_head import LesionHead
from dermlens.screen.screener import patient_ids

SPOTS = [(120, 100, 14), (400, 90, 20), (250, 300, 11), (520, 380, 16)]  # x, y, radius


def generated_photo(path, skin=(205, 160, 130), size=(640, 480)):
    photo = np.full((size[1], size[0], 3), skin, np.uint8)
    photo = np.clip(photo * (1 + 0.02 * np.random.default_rng(0).standard_normal((size[1], size[0], 1))), 0, 255).astype(np.uint8)
    for x, y, r in SPOTS:
        cv2.circle(photo, (x, y), r, (95, 60, 45), -1, cv2.LINE_AA)
    Image.fromarray(photo).save(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("screen-cli")
    photos = folder / "photos"
    photos.mkdir()
    generated_photo(photos / "back.png")
    generated_photo(photos / "chest.jpg", skin=(90, 60, 45))
    (photos / "notes.jpg").write_text("not an image")
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(photos / "tiny.png")
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(photos / "black.png")
    keep_all = LesionHead.from_tensors(np.zeros(1280), 5.0, np.zeros(1280), np.ones(1280), info={"threshold": 0.5})
    head_dir = keep_all.save(folder / "head")
    out = folder / "out"
    result = CliRunner().invoke(app, ["screen", str(photos), "--out", str(out), "--lesion-head", str(head_dir), "--quiet"])
    return result, out


def test_a_bad_photo_is_named_and_the_batch_goes_on_with_exit_code_1(run):
    result, out = run
    assert result.exit_code == 1, result.output
    assert "notes.jpg" in result.output
    assert json.loads((out / "notes.json").read_text())["error"]
    assert (out / "back.json").is_file() and (out / "chest.json").is_file()


def test_the_json_lists_every_drawn_spot_in_input_pixels_with_ranks(run):
    _, out = run
    doc = json.loads((out / "back.json").read_text())
    assert doc["image"].endswith("back.png") and doc["error"] == ""
    assert (doc["width"], doc["height"]) == (640, 480)
    lesions = doc["lesions"]
    for x, y, _ in SPOTS:
        assert any(l["box"][0] <= x <= l["box"][2] and l["box"][1] <= y <= l["box"][3] for l in lesions), (x, y)
    for lesion in lesions:
        assert {"box", "p_malignant", "suspicious", "ugly_duckling_score", "rank", "p_lesion"} <= set(lesion)
        assert 0 <= lesion["p_malignant"] <= 1 and 0 <= lesion["ugly_duckling_score"] <= 1
        assert isinstance(lesion["suspicious"], bool)
    assert [l["rank"] for l in lesions] == sorted(l["rank"] for l in lesions)  # listed rank 1 first


def test_all_photos_of_one_call_are_one_patient_ranked_together(run):
    _, out = run
    docs = [json.loads((out / f"{stem}.json").read_text()) for stem in ("back", "chest", "black", "tiny")]
    ranks = sorted(l["rank"] for d in docs for l in d["lesions"])
    assert ranks == list(range(1, len(ranks) + 1))
    scores = [l["ugly_duckling_score"] for d in docs for l in d["lesions"]]
    assert max(scores) == pytest.approx(1.0) and min(scores) == pytest.approx(0.0)


def test_all_black_and_tiny_photos_give_no_lesions_without_error(run):
    _, out = run
    for stem in ("black", "tiny"):
        doc = json.loads((out / f"{stem}.json").read_text())
        assert doc["error"] == "" and doc["lesions"] == []


def test_annotated_image_and_top_crops_are_written(run):
    _, out = run
    annotated = Image.open(out / "back.annotated.jpg")
    assert annotated.size == (640, 480)
    original = np.asarray(Image.open(out.parent / "photos" / "back.png"))
    # boxes are drawn: the annotated photo differs from the input along the box outlines
    assert np.abs(np.asarray(annotated).astype(int) - original.astype(int)).max() > 60
    doc = json.loads((out / "back.json").read_text())
    crops = sorted(p.name for p in (out / "back.crops").iterdir())
    # the top crops, and the visit report's crops of the other lesions: one per lesion, named by rank
    assert crops == sorted(f"rank{l['rank']}.jpg" for l in doc["lesions"])


def test_the_visit_page_names_every_lesion_of_the_patient_and_links_its_crop(run):
    _, out = run
    page = (out / "visit-patient.html").read_text()
    docs = [json.loads((out / f"{stem}.json").read_text()) for stem in ("back", "chest", "black", "tiny")]
    n = sum(len(d["lesions"]) for d in docs)
    assert f"<b>{n}</b> lesions" in page
    for d, stem in zip(docs, ("back", "chest", "black", "tiny")):
        for l in d["lesions"]:
            assert f'href="{stem}.crops/rank{l["rank"]}.jpg"' in page and f"<b>#{l['rank']}</b>" in page
    assert "notes.jpg" in page  # the unreadable photo is named on its patient's page


def test_patient_grouping_options(tmp_path):
    files = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    assert patient_ids(files) == ["patient", "patient"]
    assert patient_ids(files, "photo") == ["a", "b"]
    table = tmp_path / "patients.csv"
    table.write_text("image,patient\na.jpg,P1\nsub/b.jpg,P2\n")
    assert patient_ids(files, patient_csv=table) == ["P1", "P2"]
    table.write_text("image,patient\na.jpg,P1\n")
    with pytest.raises(ValueError, match="b.jpg"):
        patient_ids(files, patient_csv=table)
    table.write_text("file,who\na.jpg,P1\n")
    with pytest.raises(ValueError, match="columns"):
        patient_ids(files, patient_csv=table)
