"""Grouped, stratified splits and grouped k-fold: no lesion or patient ever on two sides."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from dermlens.data.records import Record
from dermlens.data.splits import GroupLeakError, check_no_group_leak, grouped_kfold, grouped_split

CLASS_SIZES = {"melanocytic_nevus": 60, "melanoma": 30, "basal_cell_carcinoma": 20}  # groups per class


def make_records(split_of=None) -> list[Record]:
    """Groups of 1-3 images per lesion, imbalanced classes; ``split_of(group_index)`` fixes a split if given."""
    records = []
    for node, n_groups in CLASS_SIZES.items():
        for g in range(n_groups):
            group = f"{node}-lesion{g}"
            for view in range(1 + g % 3):
                records.append(Record(
                    path=Path(f"/data/{group}-{view}.jpg"), label=node, node=node, group=group,
                    split=split_of(g) if split_of else None,
                ))
    return records


def groups_of(records) -> set[str]:
    return {r.group for r in records}


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_grouped_split_has_no_leaks_loses_nothing_and_is_stratified(seed):
    records = make_records()
    parts = grouped_split(records, val_fraction=0.15, test_fraction=0.2, seed=seed)
    assert set(parts) == {"train", "val", "test"}
    train, val, test = (groups_of(parts[k]) for k in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test
    assert sorted(r.path for part in parts.values() for r in part) == sorted(r.path for r in records)

    n = len(records)
    assert abs(len(parts["test"]) / n - 0.2) < 0.06
    assert abs(len(parts["val"]) / n - 0.15) < 0.06
    overall = Counter(r.node for r in records)
    for name, part in parts.items():
        counts = Counter(r.node for r in part)
        assert set(counts) == set(overall), f"{name} lacks a class"
        for node, total in overall.items():
            # Each class's share of a part is close to its share of the whole dataset.
            assert abs(counts[node] / len(part) - total / n) < 0.08, (name, node, counts)


def test_grouped_split_is_deterministic_per_seed():
    records = make_records()
    a = grouped_split(records, seed=3)
    b = grouped_split(records, seed=3)
    c = grouped_split(records, seed=4)
    assert {k: [r.path for r in v] for k, v in a.items()} == {k: [r.path for r in v] for k, v in b.items()}
    assert {r.path for r in a["test"]} != {r.path for r in c["test"]}


def test_grouped_split_without_test_part():
    parts = grouped_split(make_records(), val_fraction=0.2, test_fraction=0.0)
    assert parts["test"] == []
    assert not groups_of(parts["train"]) & groups_of(parts["val"])
    assert abs(len(parts["val"]) / len(make_records()) - 0.2) < 0.06


def test_grouped_split_rejects_bad_fractions():
    for val, test in [(0.0, 0.1), (0.6, 0.5), (1.0, 0.0), (0.2, -0.1)]:
        with pytest.raises(ValueError, match="bad fractions"):
            grouped_split(make_records(), val_fraction=val, test_fraction=test)


def test_fixed_split_is_honoured_whatever_the_fractions_and_seed():
    names = ("train", "train", "train", "val", "test")
    records = make_records(split_of=lambda g: names[g % 5])
    parts = grouped_split(records, val_fraction=0.5, test_fraction=0.3, seed=99)
    for name, part in parts.items():
        assert [r.path for r in part] == [r.path for r in records if r.split == name]


def test_fixed_split_that_leaks_a_group_is_an_error_not_silent():
    records = make_records(split_of=lambda g: "train" if g % 2 else "test")
    # One extra image of a training lesion placed in the test part.
    leaked = next(r for r in records if r.split == "train")
    records.append(
        Record(path=Path("/data/extra.jpg"), label=leaked.label, node=leaked.node, group=leaked.group, split="test")
    )
    with pytest.raises(GroupLeakError, match=leaked.group):
        grouped_split(records)


def test_check_no_group_leak():
    a = Record(Path("a.jpg"), "nv", "melanocytic_nevus", group="L1")
    b = Record(Path("b.jpg"), "nv", "melanocytic_nevus", group="L1")
    c = Record(Path("c.jpg"), "mel", "melanoma", group="L2")
    check_no_group_leak({"train": [a, b], "test": [c]})  # one group on one side: fine
    with pytest.raises(GroupLeakError) as info:
        check_no_group_leak({"train": [a, c], "val": [], "test": [b]})
    message = str(info.value)
    assert "'L1'" in message and "'train'" in message and "'test'" in message and "b.jpg" in message


@pytest.mark.parametrize("n_folds", [2, 5])
def test_grouped_kfold_covers_every_record_once_without_group_leaks(n_folds):
    records = make_records()
    folds = list(grouped_kfold(records, n_folds, seed=0))
    assert len(folds) == n_folds
    tested = [i for _, test_idx in folds for i in test_idx]
    assert sorted(tested) == list(range(len(records)))  # every record in exactly one test fold
    for train_idx, test_idx in folds:
        assert sorted(train_idx + test_idx) == list(range(len(records)))
        assert not {records[i].group for i in train_idx} & {records[i].group for i in test_idx}
        # Stratified: every class in every test fold.
        assert {records[i].node for i in test_idx} == set(CLASS_SIZES)


def test_grouped_kfold_rejects_impossible_fold_counts():
    records = make_records()[:4]  # groups: nevus lesion0 (1 image), lesion1 (2), lesion2 (1 of 3)
    n_groups = len(groups_of(records))
    with pytest.raises(ValueError, match="n_folds"):
        list(grouped_kfold(records, 1))
    with pytest.raises(ValueError, match="n_folds"):
        list(grouped_kfold(records, n_groups + 1))
