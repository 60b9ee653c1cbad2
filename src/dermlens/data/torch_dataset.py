"""torch Datasets over images: decode, transform, and hand back what the caller needs.

- ``RecordDataset``         labelled records for training and evaluation: (image, target index); a bad file raises
- ``TolerantImageDataset``  any image files for prediction and feature extraction: a bad file becomes a
                            ``DecodeFailure`` (file and reason) instead of an exception; batch it with
                            ``collate_keeping_failures``
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from dermlens.data.io import ImageDecodeError, load_image
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


@dataclass(frozen=True)
class DecodeFailure:
    """What :class:`TolerantImageDataset` hands back for a file it could not read: the file and the problem."""

    path: str
    reason: str

    def __str__(self) -> str:  # as ``ImageDecodeError`` reads: "<file>: <problem>"
        return f"{self.path}: {self.reason}"


class TolerantImageDataset(Dataset):
    """Images through ``transform``; a file that cannot be read is marked, not raised, so one bad file among a
    million never ends the run (and failures travel back from worker processes as data).

    Item ``i``: ``(i, tensor or DecodeFailure, shorter side of the decoded photo in pixels (0 on failure))``; the
    shorter side goes with the tensor for the gate's resolution check. Batch with :func:`collate_keeping_failures`.
    """

    def __init__(self, paths: Sequence[str | Path], transform: Callable):
        self.paths = [str(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | DecodeFailure, int]:
        path = self.paths[index]
        try:
            image = load_image(path)
            return index, self.transform(image), min(image.size)
        except ImageDecodeError as e:
            return index, DecodeFailure(path, e.reason), 0
        except Exception as e:  # noqa: BLE001 - a file that decodes but breaks a transform is still one bad file
            return index, DecodeFailure(path, f"cannot process image ({type(e).__name__}: {e})"), 0


@dataclass
class TolerantBatch:
    """A batch of :class:`TolerantImageDataset` items: the decoded images stacked, the failures kept aside."""

    indices: list[int]  # dataset positions of ``images``, in order
    images: torch.Tensor | None  # (n, 3, H, W); None when every file of the batch failed
    shorter_sides: list[int]
    failures: list[tuple[int, DecodeFailure]]  # (dataset position, what went wrong)


def collate_keeping_failures(items: Sequence[tuple[int, torch.Tensor | DecodeFailure, int]]) -> TolerantBatch:
    good = [(i, image, side) for i, image, side in items if not isinstance(image, DecodeFailure)]
    return TolerantBatch(
        indices=[i for i, _, _ in good],
        images=torch.stack([image for _, image, _ in good]) if good else None,
        shorter_sides=[side for _, _, side in good],
        failures=[(i, image) for i, image, _ in items if isinstance(image, DecodeFailure)],
    )
