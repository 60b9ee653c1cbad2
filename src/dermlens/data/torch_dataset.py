"""A torch Dataset over records: decode (with clear errors), transform, and hand back a target index."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset

from dermlens.data.io import load_image
from dermlens.data.records import Record


class RecordDataset(Dataset):
    """Images of ``records`` through ``transform``; target ``targets[i]`` (or -1 when none is given)."""

    def __init__(self, records: Sequence[Record], transform: Callable, targets: Sequence[int] | None = None):
        if targets is not None and len(targets) != len(records):
            raise ValueError(f"{len(records)} records but {len(targets)} targets")
        self.records = list(records)
        self.transform = transform
        self.targets = list(targets) if targets is not None else [-1] * len(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        record = self.records[index]
        return self.transform(load_image(record.path)), self.targets[index]
