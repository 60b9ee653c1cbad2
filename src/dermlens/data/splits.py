"""Grouped, stratified splits: no lesion or patient ever sits on two sides."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from dermlens.data.records import Record


class TooFewImagesError(ValueError):
    """Too few images (or groups) for the split asked for."""


class GroupLeakError(ValueError):
    """One group (lesion or patient) found in two parts of a split."""


def check_no_group_leak(parts: dict[str, Sequence[Record]]) -> None:
    """Raise when a group appears in more than one part; silent leaks inflate every figure."""
    owner: dict[str, str] = {}
    for part, records in parts.items():
        for record in records:
            previous = owner.setdefault(record.group, part)
            if previous != part:
                raise GroupLeakError(
                    f"group {record.group!r} is in both {previous!r} and {part!r} (e.g. {record.path})"
                )


def grouped_kfold(records: Sequence[Record], n_folds: int, seed: int = 0) -> Iterator[tuple[list[int], list[int]]]:
    """Stratified (by node) k-fold over groups; yields (train indices, test indices)."""
    n_groups = len({r.group for r in records})
    if n_folds < 2 or n_folds > n_groups:
        raise TooFewImagesError(f"n_folds must be between 2 and the number of groups ({n_groups}); got {n_folds}")
    labels = [r.node for r in records]
    groups = [r.group for r in records]
    largest = max(Counter(labels).values())
    if largest < n_folds:  # scikit-learn's own message for this is a traceback about n_splits
        raise TooFewImagesError(
            f"{len(records)} images in {len(set(labels))} classes are too few to split {n_folds} ways grouped and "
            f"stratified: at least one class needs {n_folds} images (the largest has {largest}); add images")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for train_idx, test_idx in splitter.split(np.zeros(len(records)), labels, groups):
        yield train_idx.tolist(), test_idx.tolist()


def grouped_split(
    records: Sequence[Record], val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0
) -> dict[str, list[Record]]:
    """train/val/test parts, stratified by node and grouped.

    When every record carries the dataset's own fixed split (HAM10000 does), that split is used as it is, so that
    figures stay comparable with everyone else's; it is still checked for leaks.
    """
    fixed = {r.split for r in records}
    if None not in fixed and fixed <= {"train", "val", "test"}:
        parts = {name: [r for r in records if r.split == name] for name in ("train", "val", "test")}
        check_no_group_leak(parts)
        return parts
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(f"bad fractions val={val_fraction}, test={test_fraction}")

    def carve(pool: list[Record], fraction: float, salt: int) -> tuple[list[Record], list[Record]]:
        # StratifiedGroupKFold with k = round(1/fraction) and one fold taken: grouped and stratified at once.
        k = max(2, min(round(1 / fraction), len({r.group for r in pool})))
        try:
            train_idx, held_idx = next(grouped_kfold(pool, k, seed=seed + salt))
        except TooFewImagesError as e:
            raise TooFewImagesError(f"too few images to hold out {fraction:.0%} of them ({'test' if salt == 0 else 'validation'}): {e}") from e
        return [pool[i] for i in train_idx], [pool[i] for i in held_idx]

    pool = list(records)
    test: list[Record] = []
    if test_fraction > 0:
        pool, test = carve(pool, test_fraction, 0)
    train, val = carve(pool, val_fraction / (1 - test_fraction), 1)
    parts = {"train": train, "val": val, "test": test}
    check_no_group_leak(parts)
    return parts


def pooled_split(records: Sequence[Record], val_fraction: float = 0.15, seed: int = 0) -> dict[str, list[Record]]:
    """train/val/test of several pooled datasets: each dataset keeps its own fixed split; one without a split is cut
    into train and val (grouped, stratified) and contributes no test images, because its test figures would not be
    comparable with anyone else's. Checked for group leaks across the whole pool."""
    by_source: dict[str, list[Record]] = {}
    for record in records:
        by_source.setdefault(record.source, []).append(record)
    parts: dict[str, list[Record]] = {"train": [], "val": [], "test": []}
    for source_records in by_source.values():
        has_fixed_split = all(r.split is not None for r in source_records)
        test_fraction = 0.15 if has_fixed_split else 0.0  # only used when the fixed split is not train/val/test
        for name, part in grouped_split(source_records, val_fraction, test_fraction, seed).items():
            parts[name] += part
    check_no_group_leak(parts)
    return parts


def train_val_parts(
    records: Sequence[Record], val_fraction: float = 0.15, seed: int = 0, extra_train: Sequence[Record] = ()
) -> tuple[list[Record], list[Record]]:
    """The (train, val) parts one model is fitted and selected on: the ``pooled_split`` of ``records`` (its test part
    is left for evaluation) with ``extra_train`` added to training only, so that images brought in just to learn
    from never choose the model or its operating point."""
    parts = pooled_split(records, val_fraction=val_fraction, seed=seed)
    return parts["train"] + list(extra_train), parts["val"]


def in_split(records: Sequence[Record], split: str | None, source: object) -> list[Record]:
    """The records of one fixed split (``None`` or ``""``: all of them). Finding none is an error naming ``source``
    (the dataset they came from) and the splits it does have: a typo in ``split`` is the usual cause."""
    chosen = [r for r in records if not split or r.split == split]
    if not chosen:
        present = sorted({r.split for r in records if r.split})
        has = f"its splits: {', '.join(present)}" if present else "it has no fixed split"
        raise ValueError(f"{source}: no records" + (f" in split {split!r} ({has})" if split and records else ""))
    return chosen
