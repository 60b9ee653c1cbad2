"""Which candidates are lesions: the embedding head OR the descriptor head.

The embedding head (``lesion_head``) reads the classifier's 1280-number embedding of a crop; on composites made
another way than its training photos (a lesion with its own skin, a phone's blur) it rejects real moles it has not
seen the like of. A second, small head on the crop's descriptors (``describe.head_features``: colour, contrast,
size, border, texture) fails on other candidates, so a candidate either head accepts is kept: on the leave-one-out
benchmark this raised held-out recall from 0.90 to 0.96 at a precision still above 0.95 (docs/screening.md).

The descriptor head has the lesion head's format (``LesionHead``), in the ``descriptor/`` folder beside it; without
that folder the embedding head decides alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dermlens.screen.describe import head_features
from dermlens.screen.lesion_head import HEAD_WEIGHTS, LesionHead

DESCRIPTOR_DIR = "descriptor"


def load_descriptor_head(head_dir: str | Path) -> LesionHead | None:
    folder = Path(head_dir) / DESCRIPTOR_DIR
    return LesionHead.load(folder) if (folder / HEAD_WEIGHTS).is_file() else None


def keep_lesions(embedding_head: LesionHead | None, descriptor_head: LesionHead | None, embeddings: np.ndarray,
                 descriptors: np.ndarray, contrast: np.ndarray, diameter: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keep, p_lesion) per candidate: kept when either head reaches its threshold; p_lesion is the embedding head's
    probability (1 without heads)."""
    n = len(embeddings)
    if embedding_head is None:
        return np.ones(n, bool), np.ones(n)
    p_lesion = embedding_head.probability(embeddings)
    keep = p_lesion >= embedding_head.threshold
    if descriptor_head is not None and n:
        keep |= descriptor_head.probability(head_features(descriptors, contrast, diameter)) >= descriptor_head.threshold
    return keep, p_lesion
