"""A saved model against labelled data: its figures (``dermlens evaluate``) and its operating points chosen afresh
on a site's own validation images (``dermlens operating-point``). Both read the Predictor's analyses."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dermlens.data.records import Record
from dermlens.evaluate.classification import evaluate_node_probabilities
from dermlens.evaluate.operating_point import POOLED, choose_operating_points
from dermlens.models import read_config
from dermlens.models.folder import copy_folder, update_config
from dermlens.predict import Predictor
from dermlens.taxonomy import OperatingPoint


@dataclass
class EvaluationResult:
    metrics: dict  # accuracies at the dataset's classes, 3-/9-way, binary AUCs with bootstrap CIs
    node_probs: np.ndarray  # (images, taxonomy nodes)
    truth: list[str]  # each image's labelled node


def evaluate_model(model_dir: Path, records: list[Record], num_workers: int = 2, progress: bool = True, tta: int = 1,
                   n_boot: int = 1000) -> EvaluationResult:
    """Analyse every record with the model at ``model_dir`` (gate off: every photo is scored) and score it at every
    level of the taxonomy; the bootstrap resamples by group (lesion / patient), and the binary tasks' sensitivity
    and specificity are those of the calls the model made, each photo at its own operating point."""
    predictor = Predictor(model_dir, tta=tta, gate=False)
    analyses = predictor.analyse_records(records, num_workers=num_workers, progress=progress)
    node_probs = np.array([list(a.probabilities.values()) for a in analyses]).reshape(len(analyses), -1)
    truth = [r.node for r in records]
    metrics = evaluate_node_probabilities(
        node_probs, predictor.node_ids, truth, predictor.taxonomy,
        threshold=np.array([a.operating_point.threshold for a in analyses]), groups=[r.group for r in records],
        n_boot=n_boot, class_nodes=predictor.config.class_nodes,
    )
    metrics["operating_points"] = operating_points_applied(predictor.config, analyses)
    return EvaluationResult(metrics, node_probs, truth)


def operating_points_applied(config, analyses) -> dict:
    """{modality or "pooled": {"node", "threshold", "images"}}: which of the model's points the analyses used."""
    applied: dict = {}
    for analysis in analyses:
        name = analysis.modality if analysis.modality in config.operating_points else "pooled"
        op = analysis.operating_point
        entry = applied.setdefault(name, {"node": op.node, "threshold": op.threshold, "images": 0})
        entry["images"] += 1
    return applied


@dataclass
class Retuning:
    """What ``dermlens operating-point`` did: the points it chose (by name: ``pooled`` or a modality), the ones
    they replaced, and each of the model's points it could not re-tune with why."""

    model_dir: Path  # where the re-tuned model is
    tuned: dict[str, OperatingPoint] = field(default_factory=dict)
    before: dict[str, OperatingPoint] = field(default_factory=dict)
    untuned: dict[str, str] = field(default_factory=dict)
    engine: str = ""


def set_operating_point(model_dir: Path, records: list[Record], target_sensitivity: float, out: Path | None = None,
                        *, engine: str = "auto", precision: str = "fp32", tta: int = 1, num_workers: int = 2,
                        progress: bool = True) -> Retuning:
    """Choose a model's operating points afresh on labelled validation data (e.g. a new site's own images): the
    pooled one, and each modality's that the data has photos of (by their labelled modality), with the engine,
    precision and TTA the site will run, so the thresholds fit the probabilities its users get.

    Writes into ``out`` (a whole copy of the model folder: weights, gate, heads, card) or, without ``out``, into the
    model folder itself; the config is replaced atomically either way.
    """
    model_dir = Path(model_dir)
    predictor = Predictor(model_dir, tta=tta, engine=engine, precision=precision, gate=False)
    analyses = predictor.analyse_records(records, num_workers=num_workers, progress=progress)
    chosen_with = predictor.engine_name + (f", TTA {tta}" if tta > 1 else "")
    points = choose_operating_points(
        predictor.taxonomy, predictor.config.classes, np.array([a.class_probabilities for a in analyses]),
        [r.node for r in records], [r.modality for r in records], target_sensitivity, chosen_with=chosen_with,
    )
    config = read_config(model_dir)
    has = {POOLED, *config.operating_points}
    before = points.apply(config)
    target = Path(out) if out is not None else model_dir
    if out is not None:
        copy_folder(model_dir, target)
    saved = config.to_dict()
    update_config(target, operating_point=saved["operating_point"], operating_points=saved["operating_points"])
    return Retuning(target, points.tuned, before, {k: v for k, v in points.untuned.items() if k in has},
                    predictor.engine_name)
