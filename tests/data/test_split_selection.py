"""The parts one model trains and selects on, and the records of one fixed split."""
from __future__ import annotations

from pathlib import Path

import pytest

from dermlens.data.records import Record
from dermlens.data.splits import in_split, pooled_split, train_val_parts

NODES = ("melanoma", "melanocytic_nevus", "basal_cell_carcinoma")


def records(source: str, n_groups: int = 12, split_of=None) -> list[Record]:
    return [
        Record(path=Path(f"/{source}/{node}{g}.jpg"), label=node, node=node, group=f"{source}/{node}{g}",
               source=source, split=split_of(g) if split_of else None)
        for node in NODES for g in range(n_groups)
    ]


def test_extra_training_records_only_ever_train():
    pool = records("clinic_a") + records("ham", split_of=lambda g: ("train", "val", "test")[g % 3])
    extra = records("atlas", n_groups=4)
    train, val = train_val_parts(pool, val_fraction=0.2, seed=3, extra_train=extra)
    parts = pooled_split(pool, val_fraction=0.2, seed=3)
    assert train == parts["train"] + extra and val == parts["val"]
    held_out = {r.group for r in parts["test"]}
    assert not held_out & {r.group for r in train + val}  # the fixed test part is left for evaluation


def test_in_split_keeps_one_fixed_split_or_everything():
    data = records("ham", split_of=lambda g: "test" if g < 4 else "train")
    assert {r.split for r in in_split(data, "test", "ham")} == {"test"}
    assert in_split(data, None, "ham") == data and in_split(data, "", "ham") == data


def test_in_split_with_no_match_names_the_dataset_and_the_splits_it_has():
    data = records("ham", split_of=lambda g: "test" if g < 4 else "train")
    with pytest.raises(ValueError, match=r"ham: no records in split 'tset' \(its splits: test, train\)"):
        in_split(data, "tset", "ham")
    with pytest.raises(ValueError, match="it has no fixed split"):
        in_split(records("clinic_a"), "val", "clinic_a")
