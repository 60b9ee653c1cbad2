"""The one record every dataset adapter yields, whatever the source layout."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Record:
    """One labelled image.

    ``node`` is the taxonomy node the dataset's label maps to; ``label`` keeps the dataset's own wording so that
    reports can show both. ``group`` is the lesion or patient the image belongs to: splits never put one group on
    two sides, because two photos of one lesion are not independent evidence.
    """

    path: Path
    label: str
    node: str
    group: str
    modality: str = "unknown"  # "dermoscopic", "clinical", "synthetic" or "unknown"
    split: str | None = None  # a split fixed by the dataset itself (HAM10000 ships one), else None
    source: str = ""  # the dataset it came from (its folder name) when several are pooled
    metadata: dict = field(default_factory=dict, compare=False, hash=False)
