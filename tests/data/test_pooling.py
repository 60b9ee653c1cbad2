"""Several datasets pooled for one model: sources, splits, modalities and groups kept apart."""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from dermlens.data.datasets import DatasetLayoutError, load_pooled
from dermlens.data.splits import check_no_group_leak, pooled_split
from dermlens.taxonomy import default_taxonomy, partition
from dermlens.taxonomy.partition import esteva_max_class_size

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def write_dataset(folder: Path, rows: list[dict]) -> Path:
    """A dermlens-layout labels.csv; the images need not exist for loading and splitting."""
    folder.mkdir(parents=True)
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


@pytest.fixture
def two_sources(tmp_path) -> list[Path]:
    # The same lesion ids and file names in both: pooled, they must not become one group.
    derm = [{"image": f"images/{i}.jpg", "diagnosis": ["nv", "mel"][i % 2], "lesion_id": f"L{i // 2}",
             "modality": "dermoscopic", "split": ["train", "val", "test"][i // 2 % 3]} for i in range(36)]
    clinical = [{"image": f"images/{i}.jpg", "diagnosis": ["psoriasis", "bcc", "acne"][i % 3], "lesion_id": f"L{i}",
                 "modality": "clinical", "split": ""} for i in range(60)]
    return [write_dataset(tmp_path / "derm", derm), write_dataset(tmp_path / "clinic", clinical)]


def test_pooled_records_keep_source_modality_and_split_with_groups_prefixed(two_sources):
    records = load_pooled(two_sources)
    assert Counter(r.source for r in records) == {"derm": 36, "clinic": 60}
    assert {r.modality for r in records if r.source == "derm"} == {"dermoscopic"}
    assert {r.modality for r in records if r.source == "clinic"} == {"clinical"}
    assert {r.split for r in records if r.source == "derm"} == {"train", "val", "test"}
    assert all(r.group.startswith(f"{r.source}:") for r in records)
    assert len({r.group for r in records}) == 18 + 60  # "L0" of one source is not "L0" of the other


def test_pooled_split_keeps_each_fixed_split_and_cuts_the_rest_without_leaks(two_sources):
    records = load_pooled(two_sources)
    parts = pooled_split(records, val_fraction=0.2, seed=0)
    for name in ("train", "val", "test"):  # the fixed split, untouched
        assert {r.path for r in parts[name] if r.source == "derm"} == {r.path for r in records if r.source == "derm" and r.split == name}
    clinic = {name: [r for r in part if r.source == "clinic"] for name, part in parts.items()}
    assert clinic["test"] == []  # a source without a split gives no test images
    assert 6 <= len(clinic["val"]) <= 18 and len(clinic["train"]) + len(clinic["val"]) == 60
    check_no_group_leak(parts)


def test_pooled_split_never_lets_a_group_cross(tmp_path):
    rows = [{"image": f"images/{i}.jpg", "diagnosis": "nv", "lesion_id": "same", "split": s}
            for i, s in enumerate(["train", "test"])]
    with pytest.raises(ValueError, match="group 'same'"):
        pooled_split(load_pooled([write_dataset(tmp_path / "a", rows)]))


def test_two_datasets_with_one_folder_name_are_refused(two_sources, tmp_path):
    with pytest.raises(DatasetLayoutError, match="--data: two datasets share the folder name 'derm'"):
        load_pooled([two_sources[0], two_sources[0]])


def test_partition_of_a_pooled_tree_spans_all_three_roots(two_sources):
    records = load_pooled(two_sources)
    classes = partition(default_taxonomy(), Counter(r.node for r in records), 1)
    roots = {default_taxonomy().ancestor_at_level(c.node, 1) for c in classes}
    assert roots == {"benign", "malignant", "non_neoplastic"}


@pytest.mark.data
@pytest.mark.skipif(not (SHARED / "dermnet").is_dir(), reason=f"real data not found at {SHARED}")
def test_the_shipped_pool_partitions_into_many_classes_at_the_papers_scale():
    records = load_pooled([SHARED / "ham10000", SHARED / "isic2017", SHARED / "dermnet"])
    parts = pooled_split(records)
    assert {r.source for r in parts["test"]} == {"ham10000", "dermnet"}  # ISIC 2017 ships train and val only
    assert Counter(r.modality for r in parts["train"]) == {"dermoscopic": 7012 + 2000, "clinical": 5060}
    size = esteva_max_class_size(len(parts["train"]))
    classes = partition(default_taxonomy(), Counter(r.node for r in parts["train"]), size)
    assert size == 109 and len(classes) >= 24
    assert all(c.count < size or default_taxonomy().is_leaf(c.node) or c.own_only for c in classes)
