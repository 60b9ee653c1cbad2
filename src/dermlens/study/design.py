"""The study's design: its settings, the label spaces of the paper's ablation, grouped folds with a validation part
carved from each fold's training images, and the files its predictions are saved in (``dermlens report`` rebuilds
everything from them)."""
from __future__ import annotations

import csv
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from dermlens.data.records import Record
from dermlens.data.splits import grouped_kfold
from dermlens.taxonomy import ClassAssignment, Taxonomy, TrainingClass, partition


SPACES = ("three_way", "nine_way", "training_classes")
SPACE_LEVEL = {"three_way": 1, "nine_way": 2}
SPACE_TITLES = {"three_way": "3 first-level classes", "nine_way": "9 second-level classes",
                "training_classes": "partitioned training classes"}
PREDICTIONS = "predictions"
STUDY_FILE = "study.json"
RECORDS_FILE = "records.csv"
@dataclass
class StudyConfig:
    mode: str = "fast"  # fast | full
    folds: int = 9  # as in Esteva et al.
    arch: str = "efficientnet_lite0"
    weights: str | None = None
    image_size: int | None = None  # None: the backbone's own
    color_constancy: bool = True
    max_class_size: float | None = None  # None: Esteva et al.'s 1000 per 129,450 images, scaled to the data
    spaces: tuple[str, ...] = SPACES
    val_fraction: float = 0.15  # of each fold's training part
    seed: int = 0
    batch_size: int = 64
    num_workers: int = 2
    # fast mode: the linear head (L-BFGS iterations per L2 value on the grid)
    head_iterations: int = 100
    balance: str = "loss"  # none | loss (inverse-frequency loss weights)
    target_sensitivity: float = 0.9  # the saved fast model's referral points, chosen on fold 0's validation part
    # full mode: overrides of dermlens.train.recipe.TrainConfig (epochs, lr, batch_size, ...)
    train: dict = field(default_factory=dict)
    # explanation
    tsne_points: int = 1000  # class-stratified sample for the t-SNE figure
    saliency_per_class: int = 2  # correct and as many incorrect cases per class
    n_boot: int = 1000

    def __post_init__(self):
        if self.mode not in ("fast", "full"):
            raise ValueError(f"mode must be fast or full; got {self.mode!r}")
        unknown = [s for s in self.spaces if s not in SPACES]
        if unknown or not self.spaces:
            raise ValueError(f"spaces must be a non-empty subset of {SPACES}; got {self.spaces}")
        if "training_classes" not in self.spaces:
            raise ValueError("the training_classes space is the study's main model; keep it in spaces")
        self.spaces = tuple(s for s in SPACES if s in self.spaces)


def level_node(taxonomy: Taxonomy, node: str, space: str) -> str | None:
    """The node an image labelled ``node`` trains as in a direct 3-way / 9-way space (None: labelled above it)."""
    return taxonomy.ancestor_at_level(node, SPACE_LEVEL[space])


def space_classes(space: str, taxonomy: Taxonomy, train_nodes: list[str], max_class_size: float) -> list[TrainingClass]:
    """The classes a head of ``space`` is trained on, from the nodes of its training images."""
    if space == "training_classes":
        return partition(taxonomy, Counter(train_nodes), max_class_size)
    counts = Counter(n for n in (level_node(taxonomy, m, space) for m in train_nodes) if n)
    return [TrainingClass(n, counts[n]) for n in taxonomy.level_nodes(SPACE_LEVEL[space]) if counts[n]]


def targets_for(assignment: ClassAssignment, nodes: list[str]) -> np.ndarray:
    """Class index per node, -1 where no class covers it (such images are left out of training and scoring)."""
    out = []
    for n in nodes:
        try:
            out.append(assignment.class_index(n))
        except ValueError:
            out.append(-1)
    return np.array(out, dtype=int)


def relabel(records: list[Record], taxonomy: Taxonomy, space: str) -> list[Record]:
    """A direct 3-/9-way model trains on each image's ancestor at that level (images labelled above it drop out)."""
    if space == "training_classes":
        return list(records)
    return [replace(r, node=n) for r in records if (n := level_node(taxonomy, r.node, space))]


def carve_validation(records: list[Record], indices: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split a fold's training indices into (train, validation), grouped and stratified."""
    pool = [records[i] for i in indices]
    k = max(2, min(round(1 / fraction), len({r.group for r in pool})))
    with warnings.catch_warnings():  # "least populated class has fewer members than n_splits": expected, harmless
        warnings.simplefilter("ignore", UserWarning)
        train_local, val_local = next(grouped_kfold(pool, k, seed=seed))
    return [indices[i] for i in train_local], [indices[i] for i in val_local]


def make_folds(records: list[Record], n_folds: int, val_fraction: float, seed: int) -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        splits = list(grouped_kfold(records, n_folds, seed=seed))
    folds = []
    for k, (rest, test) in enumerate(splits):
        train_idx, val_idx = carve_validation(records, rest, val_fraction, seed + 1 + k)
        folds.append({"fold": k, "train": sorted(train_idx), "val": sorted(val_idx), "test": sorted(test)})
    return folds


def write_records(path: Path, records: list[Record], fold_of: np.ndarray, ok: np.ndarray) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "path", "label", "node", "group", "modality", "fold", "ok"])
        for i, r in enumerate(records):
            # Absolute paths: the report may be rebuilt from another working directory.
            writer.writerow([i, str(Path(r.path).absolute()), r.label, r.node, r.group, r.modality, int(fold_of[i]),
                             int(ok[i])])


def read_records(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["index"], row["fold"], row["ok"] = int(row["index"]), int(row["fold"]), row["ok"] == "1"
    return rows


def save_fold(pred_dir: Path, space: str, fold: int, test_idx, test_lp, val_idx, val_lp) -> None:
    np.savez_compressed(
        pred_dir / f"{space}-fold{fold}.npz",
        test_index=np.asarray(test_idx, dtype=np.int64), test_log_probs=np.asarray(test_lp, dtype=np.float32),
        val_index=np.asarray(val_idx, dtype=np.int64), val_log_probs=np.asarray(val_lp, dtype=np.float32),
    )


def load_fold(pred_dir: Path, space: str, fold: int) -> dict[str, np.ndarray]:
    with np.load(pred_dir / f"{space}-fold{fold}.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
