"""A saved model against labelled data: its figures (``dermlens evaluate``) and a referral threshold chosen afresh
on a site's own validation images (``dermlens operating-point``)."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dermlens.data.records import Record
from dermlens.evaluate.classification import evaluate_node_probabilities
from dermlens.evaluate.operating_point import choose_operating_point
from dermlens.models import save_model
from dermlens.models.modality import MODALITIES
from dermlens.predict import Predictor
from dermlens.taxonomy import ClassAssignment, OperatingPoint


@dataclass
class EvaluationResult:
    metrics: dict  # accuracies at the dataset's classes, 3-/9-way, binary AUCs with bootstrap CIs
    node_probs: np.ndarray  # (images, taxonomy nodes)
    truth: list[str]  # each image's labelled node


def evaluate_model(model_dir: Path, records: list[Record], num_workers: int = 2, progress: bool = True, tta: int = 1,
                   n_boot: int = 1000) -> EvaluationResult:
    """Predict every record with the model at ``model_dir`` and score it at every level of the taxonomy; the
    bootstrap resamples by group (lesion / patient). The binary tasks' sensitivity and specificity use, per image,
    the operating point ``dermlens predict --modality M`` applies: the modality's own where the dataset states the
    modality (dermoscopic, clinical) and the model has one, else the pooled one; ``metrics["operating_points"]``
    says which were applied to how many images."""
    predictor = Predictor(model_dir, tta=tta)
    class_probs = predictor.predict_records(records, num_workers=num_workers, progress=progress)
    node_probs = predictor.node_probabilities(class_probs)
    truth = [r.node for r in records]
    points = [_operating_point(predictor.config, r) for r in records]
    metrics = evaluate_node_probabilities(
        node_probs, predictor.node_ids, truth, predictor.taxonomy,
        threshold=np.array([op.threshold for _, op in points]), groups=[r.group for r in records], n_boot=n_boot,
        class_nodes=predictor.config.class_nodes,
    )
    applied: dict = {}  # {modality or "pooled": {"node", "threshold", "images"}}
    for name, op in points:
        applied.setdefault(name, {"node": op.node, "threshold": op.threshold, "images": 0})["images"] += 1
    metrics["operating_points"] = applied
    return EvaluationResult(metrics, node_probs, truth)


def _operating_point(config, record: Record) -> tuple[str, OperatingPoint]:
    """(its name, the operating point) that ``dermlens predict --modality M`` applies to this record's photo."""
    if record.modality in MODALITIES and record.modality in config.operating_points:
        return record.modality, config.operating_point_for(record.modality)
    return "pooled", config.operating_point


def set_operating_point(model_dir: Path, records: list[Record], target_sensitivity: float,
                        out: Path | None = None) -> OperatingPoint:
    """Choose a model's referral threshold afresh on labelled validation data (e.g. a new site's own images).

    Writes the updated ``config.json`` into ``out`` (weights and model card copied beside it) or, without ``out``,
    in place; returns the new operating point.
    """
    predictor = Predictor(model_dir)
    class_probs = predictor.predict_records(records)
    assignment = ClassAssignment(predictor.taxonomy, predictor.config.classes)
    config = predictor.config
    config.operating_point = choose_operating_point(
        predictor.taxonomy, assignment, class_probs, [r.node for r in records], target_sensitivity
    )
    save_model(out or model_dir, predictor.model, config)
    if out is not None and (model_dir / "MODEL_CARD.md").is_file():
        shutil.copy(model_dir / "MODEL_CARD.md", out / "MODEL_CARD.md")
    return config.operating_point
