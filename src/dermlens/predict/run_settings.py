"""What made a results file's rows: the run's settings, recorded beside the results, and the check that a resumed
run makes its rows the same way.

A results file (CSV, JSON, Parquet: any format) gets a sidecar ``<results file>.settings.json`` holding the
settings dict. Appending rows made another way (another model, engine or precision, more TTA views, another
modality, the gate off) would leave a file whose rows cannot be compared, with nothing in it saying so; so a resume
reads the record and refuses, naming each setting that changed. A file without a record (written by hand or by an
older dermlens) cannot be vouched for, so it is refused too.

    settings = prediction_settings(predictor, modality)      # what would make this run's rows
    check_unchanged(results_path, settings)                  # before appending: SettingsChangedError if not
    write_settings(results_path, settings)                   # beside a new results file
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

SUFFIX = ".settings.json"
# Version of what a row holds; bump when the same settings would make different rows (2: a photo the gate stopped
# carries no probabilities, top-5 or top-1).
ROW_FORMAT = 2
# Recorded for the reader, not compared: a moved model folder or a newer dermlens with the same weights, engine
# and options makes the same rows.
NOT_COMPARED = frozenset({"dermlens_version", "model_dir"})
LABELS = {
    "row_format": "row format (dermlens version)",
    "model_weights_sha256": "model weights",
    "model_config_sha256": "model config (classes, preprocessing, operating points, gate thresholds)",
    "gate_sha256": "gate",
    "modality_head_sha256": "modality head",
    "taxonomy": "taxonomy",
    "engine": "engine",
    "tta": "tta",
    "modality": "modality",
    "gate": "gate on",
}


class SettingsChangedError(ValueError):
    """A resume whose settings differ from those that made the results already written."""


def settings_path(results: str | Path) -> Path:
    """Where the settings of ``results`` are recorded: ``predictions.csv`` -> ``predictions.csv.settings.json``."""
    results = Path(results)
    return results.with_name(results.name + SUFFIX)


def file_sha256(path: Path) -> str | None:
    """SHA-256 of a file, or None when there is no such file (a model without a gate, say)."""
    if not path.is_file():
        return None
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def prediction_settings(predictor, modality: str | None) -> dict:
    """The settings that decide a predictor's rows: the model's files (weights, config with its thresholds, gate,
    modality head) by digest, the taxonomy, the engine that runs (e.g. "onnx int8"), TTA views, the modality asked
    for (None: recognised per photo) and whether the gate is on."""
    from dermlens import __version__
    from dermlens.gate import GATE_FILE
    from dermlens.models.modality import HEAD_FILE
    from dermlens.models.saved import CONFIG_FILE, WEIGHTS_FILE

    model_dir = Path(predictor.model_dir)
    return {
        "row_format": ROW_FORMAT,
        "model_dir": str(model_dir.resolve()),
        "model_weights_sha256": file_sha256(model_dir / WEIGHTS_FILE),
        "model_config_sha256": file_sha256(model_dir / CONFIG_FILE),
        "gate_sha256": file_sha256(model_dir / GATE_FILE),
        "modality_head_sha256": file_sha256(model_dir / HEAD_FILE),
        "taxonomy": f"{predictor.taxonomy.version} {predictor.taxonomy.fingerprint()}",
        "engine": predictor.engine_name,
        "tta": predictor.tta,
        "modality": modality or "auto",
        "gate": predictor.gate is not None,
        "dermlens_version": __version__,
    }


def _shown(value) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]  # a digest: its start tells two apart
    return "none" if value is None else str(value)


def changed_settings(old: dict, new: dict) -> list[str]:
    """Each setting that differs between ``old`` and ``new``, in words: ``["tta: 1 -> 4", ...]`` (empty: none).
    A setting one of them lacks counts as changed; ``NOT_COMPARED`` keys are ignored."""
    changes = []
    for key in [*new, *(k for k in old if k not in new)]:
        if key in NOT_COMPARED or old.get(key, "missing") == new.get(key, "missing"):
            continue
        changes.append(f"{LABELS.get(key, key)}: {_shown(old.get(key))} -> {_shown(new.get(key))}")
    return changes


def read_settings(results: str | Path) -> dict | None:
    """The settings recorded beside ``results``, or None when there is no record."""
    path = settings_path(results)
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SettingsChangedError(f"{path}: unreadable settings record ({e})") from e
    if not isinstance(settings, dict):
        raise SettingsChangedError(f"{path}: not a settings record")
    return settings


def write_settings(results: str | Path, settings: dict) -> Path:
    """Record ``settings`` beside ``results``, atomically (a crash leaves the old record or the new one)."""
    path = settings_path(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path


def check_unchanged(results: str | Path, settings: dict) -> None:
    """Refuse (SettingsChangedError, naming every changed setting) to add rows to ``results`` made with other
    settings than those recorded beside it, or to a results file that records none."""
    recorded = read_settings(results)
    if recorded is None:
        raise SettingsChangedError(
            f"{results}: its settings were not recorded (written by hand or by an older dermlens), so a resume "
            "cannot tell whether its rows were made like these; write to a new --out folder, or --overwrite")
    changes = changed_settings(recorded, settings)
    if changes:
        raise SettingsChangedError(
            f"{results} was made with other settings ({'; '.join(changes)}): resuming would mix rows made "
            "differently; resume with the earlier settings, write to a new --out folder, or --overwrite")
