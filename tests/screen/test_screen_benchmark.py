"""`benchmarks/screen_benchmark.py` on a small HAM10000-shaped folder the test generates (no real data needed),
the compositing pieces it rests on (`benchmarks/screen_scenes.py`), and reading its folders back
(`dermlens.screen.truth`)."""
from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import screen_benchmark
import screen_scenes as scene
from PIL import Image

from dermlens.screen.train_head import train_lesion_head
from dermlens.screen.truth import load_benchmark, match


def fake_ham(folder, n_nv=10, n_mel=4):
    """200x150 'dermoscopic' photos of a dark ellipse on skin, with masks, labels.csv like ../shared/data/ham10000."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_nv + n_mel):
        dx = "nv" if i < n_nv else "mel"
        img = np.full((150, 200, 3), (225, 180, 160), np.uint8)
        mask = np.zeros((150, 200), np.uint8)
        axes = (int(rng.integers(25, 50)), int(rng.integers(20, 40)))
        colour = tuple(int(v) for v in ((120, 70, 50) if dx == "nv" else (60, 40, 60)) + rng.integers(-20, 20, 3))
        cv2.ellipse(img, (100, 75), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
        cv2.ellipse(mask, (100, 75), axes, 0, 0, 360, 255, -1)  # a rough mask, as real ones are
        Image.fromarray(img).save(folder / "images" / f"I{i}.jpg")
        Image.fromarray(mask).save(folder / "masks" / f"I{i}_segmentation.png")
        rows.append({"image": f"images/I{i}.jpg", "diagnosis": dx, "lesion_id": f"L{i}", "mask": f"masks/I{i}_segmentation.png", "split": "test"})
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


def test_make_benchmark_writes_patients_with_ground_truth(tmp_path):
    data = fake_ham(tmp_path / "ham")
    out = tmp_path / "bench"
    assert screen_benchmark.main(["--data", str(data), "--out", str(out), "--patients", "3", "--seed", "1", "--quiet"]) == 0
    records = load_benchmark(out)
    assert [r["patient"] for r in records] == ["p000", "p001", "p002"]
    assert json.loads((out / "benchmark.json").read_text())["split"] == "test"
    for r in records:
        photo = np.asarray(Image.open(r["image"]))
        assert photo.shape == (768, 1024, 3)
        assert len(r["lesions"]) >= 5
        assert sum(l["planted"] for l in r["lesions"]) <= 2
        assert len({l["source"] for l in r["lesions"]}) == len(r["lesions"])  # no lesion twice in a patient
        for l in r["lesions"]:
            x0, y0, x1, y1 = l["box"]
            assert 0 <= x0 < x1 <= 1024 and 0 <= y0 < y1 <= 768
            assert l["planted"] == (l["kind"] != "ordinary")
            # the pasted lesion is darker than the skin just outside its box
            inside = photo[y0:y1, x0:x1].mean()
            ring = np.concatenate([photo[max(0, y0 - 6):y0, x0:x1].reshape(-1, 3), photo[y1:y1 + 6, x0:x1].reshape(-1, 3)])
            if len(ring):
                assert inside < ring.mean()


def test_make_benchmark_names_a_folder_that_is_no_dataset(tmp_path, capsys):
    assert screen_benchmark.main(["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "labels.csv" in error and str(tmp_path) in error


def test_a_folder_without_manifest_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="benchmark.json.*screen_benchmark.py"):
        load_benchmark(tmp_path)


def test_the_lesion_head_refuses_a_test_split_folder(tmp_path):
    (tmp_path / "benchmark.json").write_text(json.dumps({"split": "test", "patients": []}))
    with pytest.raises(ValueError, match="test split"):
        train_lesion_head(tmp_path, tmp_path / "head", progress=False)


def test_a_sprite_pastes_multiplicatively_with_the_right_box():
    img = np.full((150, 200, 3), (200, 160, 140), np.uint8)
    mask = np.zeros((150, 200), np.uint8)
    cv2.circle(mask, (100, 75), 30, 255, -1)
    img[mask > 0] = (100, 80, 70)  # half the skin's brightness
    sprite = scene.make_sprite(img, mask, diameter=40)
    canvas = np.full((200, 200, 3), 80.0, np.float32)  # much darker skin
    box = scene.paste(canvas, sprite, 100, 100)
    assert box is not None and abs((box[2] - box[0]) - 40) <= 3 and abs((box[3] - box[1]) - 40) <= 3
    assert canvas[100, 100] == pytest.approx([40, 40, 40], abs=2)  # same ratio to the skin, on the new skin
    assert canvas[5, 5] == pytest.approx([80, 80, 80])
    assert scene.paste(canvas, sprite, 5, 5) is None  # would leave the photo


def test_usable_mask_rejects_empty_huge_and_cut_off_lesions():
    mask = np.zeros((150, 200), np.uint8)
    assert not scene.usable_mask(mask)
    cv2.circle(mask, (100, 75), 30, 255, -1)
    assert scene.usable_mask(mask)
    assert not scene.usable_mask(np.full((150, 200), 255, np.uint8))
    edge = np.zeros((150, 200), np.uint8)
    edge[:, :80] = 255
    assert not scene.usable_mask(edge)


def test_skin_tones_run_from_light_to_dark():
    lum = [scene.skin_tone(t).mean() for t in np.linspace(0, 1, 11)]
    assert all(a > b for a, b in zip(lum, lum[1:]))
    assert lum[0] > 200 and lum[-1] < 60


def test_match_finds_each_lesion_once_by_centre():
    truth = [[10, 10, 30, 30], [100, 100, 120, 120]]
    boxes = [[0, 0, 40, 40], [5, 5, 35, 35], [200, 200, 210, 210], [90, 90, 130, 130]]
    found = match(truth, boxes).tolist()
    assert found.count(0) == 1 and found.count(1) == 1 and found[2] == -1
