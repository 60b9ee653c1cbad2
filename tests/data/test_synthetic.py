"""Tests for dermlens.data.synthetic: deterministic, well-formed, marked synthetic, and actually learnable."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dermlens.data.io import load_image
from dermlens.data.synthetic import SYNTHETIC_CLASSES, make_synthetic_dataset, render_lesion


def _read_rows(labels_csv: Path) -> list[dict[str, str]]:
    with open(labels_csv, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(load_image(path), dtype=np.float64) / 255.0


def _border_colour(pixels: np.ndarray, width: int = 3) -> np.ndarray:
    """Median colour of the image frame: the skin, as the lesion sits near the centre."""
    frame = np.concatenate(
        [
            pixels[:width].reshape(-1, 3),
            pixels[-width:].reshape(-1, 3),
            pixels[:, :width].reshape(-1, 3),
            pixels[:, -width:].reshape(-1, 3),
        ]
    )
    return np.median(frame, axis=0)


def _hand_crafted_features(pixels: np.ndarray) -> np.ndarray:
    """Lesion area by thresholding the distance from the skin colour, plus simple colour statistics inside it."""
    skin = _border_colour(pixels)
    distance = np.linalg.norm(pixels - skin, axis=2)
    mask = distance > 0.1
    if mask.sum() < 5:  # faint lesion: take the most different pixels
        mask = distance >= np.quantile(distance, 0.95)
    inside = pixels[mask] / np.maximum(skin, 1e-3)  # relative to the skin, so skin tone cancels out
    brightness = inside.mean(axis=1)
    return np.concatenate(
        [
            [
                mask.mean(),  # area
                (brightness < 0.45).mean(),  # very dark parts (black, dark brown)
                (brightness > 1.05).mean(),  # parts lighter than the skin (white, pearly)
                np.quantile(inside[:, 0] - inside[:, 1], 0.9),  # red
                np.quantile(inside[:, 2] - inside[:, 0], 0.9),  # blue-grey
            ],
            inside.mean(axis=0),
            inside.std(axis=0),
        ]
    )


# --------------------------------------------------------------------------------------------------------------
# render_lesion
# --------------------------------------------------------------------------------------------------------------


def test_classes_are_the_five_taxonomy_ids():
    assert SYNTHETIC_CLASSES == (
        "melanoma",
        "melanocytic_nevus",
        "seborrheic_keratosis",
        "basal_cell_carcinoma",
        "dermatofibroma",
    )


def test_render_lesion_is_rgb_of_the_requested_size_and_seeded():
    for label in SYNTHETIC_CLASSES:
        image = render_lesion(label, np.random.default_rng(7), size=48)
        assert (image.mode, image.size) == ("RGB", (48, 48))
        again = render_lesion(label, np.random.default_rng(7), size=48)
        assert np.array_equal(np.asarray(image), np.asarray(again))
        other = render_lesion(label, np.random.default_rng(8), size=48)
        assert not np.array_equal(np.asarray(image), np.asarray(other))


def test_render_lesion_draws_a_lesion_that_differs_from_the_skin():
    for label in SYNTHETIC_CLASSES:
        pixels = np.asarray(render_lesion(label, np.random.default_rng(3), size=64), dtype=np.float64) / 255
        centre = pixels[24:40, 24:40].reshape(-1, 3).mean(axis=0)
        assert np.abs(centre - _border_colour(pixels)).max() > 0.05, label


def test_render_lesion_rejects_unknown_labels_and_tiny_sizes():
    with pytest.raises(ValueError, match="unknown synthetic class 'psoriasis'"):
        render_lesion("psoriasis", np.random.default_rng(0))
    with pytest.raises(ValueError, match="size"):
        render_lesion("melanoma", np.random.default_rng(0), size=4)


# --------------------------------------------------------------------------------------------------------------
# make_synthetic_dataset
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "set", n_per_class=10, size=48, seed=3)


def test_layout_counts_and_columns(small_dataset):
    root = small_dataset.parent
    assert small_dataset == root / "labels.csv"
    header = small_dataset.read_text(encoding="utf-8").splitlines()[0]
    assert header == "path,label,group,synthetic"
    rows = _read_rows(small_dataset)
    assert Counter(row["label"] for row in rows) == {label: 10 for label in SYNTHETIC_CLASSES}
    assert {row["synthetic"] for row in rows} == {"true"}
    for row in rows:
        relative = Path(row["path"])
        assert not relative.is_absolute() and relative.parts[:2] == ("images", row["label"])
        assert relative.suffix == ".png"
        image = load_image(root / relative)
        assert image.size == (48, 48)
    assert len({row["path"] for row in rows}) == len(rows)
    written = sorted(path.relative_to(root).as_posix() for path in (root / "images").rglob("*.png"))
    assert written == sorted(row["path"] for row in rows)


def test_groups_hold_two_or_three_views_of_one_lesion(small_dataset):
    rows = _read_rows(small_dataset)
    members: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        members[row["group"]].append(row)
    # A group belongs to exactly one class, and 10 images per class make 4 groups of 3, 3, 2, 2.
    for group, group_rows in members.items():
        assert len({row["label"] for row in group_rows}) == 1, group
    for label in SYNTHETIC_CLASSES:
        sizes = sorted(len(v) for v in members.values() if v[0]["label"] == label)
        assert sizes == [2, 2, 3, 3], label

    # The views of one lesion are re-rendered (not copies) yet alike: same patient skin, same lesion.
    root = small_dataset.parent
    within, between = [], []
    skins = {group: [_border_colour(_pixels(root / row["path"])) for row in v] for group, v in members.items()}
    groups = sorted(skins)
    for group in groups:
        first, second = (root / members[group][0]["path"]), (root / members[group][1]["path"])
        assert not np.array_equal(_pixels(first), _pixels(second)), group
        within.append(np.abs(skins[group][0] - skins[group][1]).mean())
    for a, b in zip(groups, groups[1:] + groups[:1]):
        between.append(np.abs(skins[a][0] - skins[b][0]).mean())
    assert np.median(within) < 0.5 * np.median(between)


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    first = make_synthetic_dataset(tmp_path / "a", n_per_class=4, size=40, seed=11)
    second = make_synthetic_dataset(tmp_path / "b", n_per_class=4, size=40, seed=11)
    other = make_synthetic_dataset(tmp_path / "c", n_per_class=4, size=40, seed=12)
    assert first.read_bytes() == second.read_bytes()
    rows = _read_rows(first)
    for row in rows:
        pixels_a = np.asarray(Image.open(first.parent / row["path"]))
        pixels_b = np.asarray(Image.open(second.parent / row["path"]))
        assert np.array_equal(pixels_a, pixels_b), row["path"]
    other_rows = _read_rows(other)
    assert [r["label"] for r in other_rows] == [r["label"] for r in rows]
    differing = sum(
        not np.array_equal(
            np.asarray(Image.open(first.parent / a["path"])), np.asarray(Image.open(other.parent / b["path"]))
        )
        for a, b in zip(rows, other_rows, strict=True)
    )
    assert differing == len(rows)


def test_readme_says_the_data_is_synthetic(small_dataset):
    readme = (small_dataset.parent / "README.txt").read_text(encoding="utf-8")
    assert "SYNTHETIC" in readme
    assert "NOT REAL PATIENTS" in readme
    assert "dermlens" in readme
    assert "seed=3" in readme


def test_explicit_group_count_jpeg_output_and_argument_checks(tmp_path):
    labels = make_synthetic_dataset(
        tmp_path / "j", n_per_class=6, size=32, seed=0, n_groups_per_class=2, image_format="jpeg"
    )
    rows = _read_rows(labels)
    assert len(rows) == 30
    assert all(row["path"].endswith(".jpg") for row in rows)
    assert Counter(Counter(row["group"] for row in rows).values()) == {3: 10}
    assert load_image(labels.parent / rows[0]["path"]).size == (32, 32)
    with pytest.raises(ValueError, match="n_groups_per_class"):
        make_synthetic_dataset(tmp_path / "bad", n_per_class=3, n_groups_per_class=4)
    with pytest.raises(ValueError, match="n_per_class"):
        make_synthetic_dataset(tmp_path / "bad", n_per_class=0)
    with pytest.raises(ValueError, match="image_format"):
        make_synthetic_dataset(tmp_path / "bad", n_per_class=1, image_format="gif")


# --------------------------------------------------------------------------------------------------------------
# learnability: classes differ the way they should, and not through shortcuts
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def feature_table(tmp_path_factory):
    labels = make_synthetic_dataset(tmp_path_factory.mktemp("learn") / "set", n_per_class=40, size=64, seed=0)
    rows = _read_rows(labels)
    features, skins, targets, held_out = [], [], [], []
    for row in rows:
        pixels = _pixels(labels.parent / row["path"])
        features.append(_hand_crafted_features(pixels))
        skins.append(_border_colour(pixels))
        targets.append(row["label"])
        # Hold out whole lesions (every third group), so re-rendered views cannot leak into the test set.
        held_out.append(int(row["group"].rsplit("-", 1)[1]) % 3 == 0)
    return np.array(features), np.array(skins), np.array(targets), np.array(held_out)


def _held_out_accuracy(features: np.ndarray, targets: np.ndarray, held_out: np.ndarray) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(features[~held_out], targets[~held_out])
    return float((model.predict(features[held_out]) == targets[held_out]).mean())


def test_simple_features_separate_the_classes_on_held_out_lesions(feature_table):
    features, _, targets, held_out = feature_table
    assert set(targets[held_out]) == set(SYNTHETIC_CLASSES)
    accuracy = _held_out_accuracy(features, targets, held_out)
    assert accuracy > 0.6, f"held-out accuracy {accuracy:.2f} (chance 0.2): classes look too much alike"


def test_no_shortcuts_skin_tone_carries_no_label_and_size_alone_is_not_enough(feature_table):
    features, skins, targets, held_out = feature_table
    # Skin tone is drawn independently of the class; it should predict about as well as guessing (0.2).
    assert _held_out_accuracy(skins, targets, held_out) < 0.4
    # Sizes overlap between classes: area alone must not give the answer away.
    assert _held_out_accuracy(features[:, :1], targets, held_out) < 0.6
    # And the skin tones really vary, light to dark.
    brightness = skins.mean(axis=1)
    assert brightness.max() - brightness.min() > 0.3
