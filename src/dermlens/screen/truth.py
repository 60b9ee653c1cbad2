"""Wide-field photos with known lesions: reading a labelled folder and matching reported boxes to its lesions.

A labelled folder holds ``benchmark.json`` (the manifest: source split, seed, and one entry per patient) and per
patient a photo ``pNNN.jpg`` with ``pNNN.truth.json`` (the lesions' boxes ``[x0, y0, x1, y1]``, whether each was
planted as an ugly duckling, its kind and diagnosis). ``benchmarks/screen_benchmark.py`` composes such folders from
HAM10000; the runtime reads them to train the lesion head (:mod:`dermlens.screen.train_head`) and the screening
benchmark (``benchmarks/screen.py``) to score the screener.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MANIFEST = "benchmark.json"
MAKE_HINT = "make one with `python benchmarks/screen_benchmark.py`"


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a labelled screening folder ({MAKE_HINT})")
    return json.loads(path.read_text())


def load_benchmark(folder: str | Path) -> list[dict]:
    """Every patient's truth record, with ``image`` made a full path."""
    folder = Path(folder)
    records = []
    for entry in read_manifest(folder)["patients"]:
        truth = json.loads((folder / entry["truth"]).read_text())
        truth["image"] = str(folder / entry["image"])
        records.append(truth)
    return records


def centre_inside(truth_box, box) -> bool:
    """A lesion is found when its centre falls inside a predicted box."""
    cx, cy = (truth_box[0] + truth_box[2]) / 2, (truth_box[1] + truth_box[3]) / 2
    return box[0] <= cx <= box[2] and box[1] <= cy <= box[3]


def _centre(box) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def match(truth_boxes: list, boxes: list) -> np.ndarray:
    """(n_boxes,) index of the true lesion each predicted box finds (-1: none); each lesion found at most once,
    by the box whose centre is nearest its centre."""
    found = np.full(len(boxes), -1)
    for t, truth_box in enumerate(truth_boxes):
        hits = [i for i, box in enumerate(boxes) if found[i] < 0 and centre_inside(truth_box, box)]
        if hits:
            found[min(hits, key=lambda i: np.linalg.norm(_centre(boxes[i]) - _centre(truth_box)))] = t
    return found
