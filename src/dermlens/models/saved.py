"""A trained model on disk: ``model.safetensors`` (weights) + ``config.json`` (everything else).

``save_weights`` / ``load_weights`` are the one format for every model kind (the classifier here, the lesion
segmenter, the PET U-Net; written by :mod:`dermlens.models.folder`, atomically); ``save_model`` / ``load_model`` add
the classifier's config and taxonomy check on top.
No pickle anywhere: a model file from a stranger can at worst hold wrong numbers, never run code.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from dermlens.data.transforms import Preprocessing
from dermlens.models.backbones import create_backbone
from dermlens.models.folder import CONFIG_FILE, WEIGHTS_FILE, read_config_dict, save_weights
from dermlens.taxonomy import OperatingPoint, Taxonomy, TrainingClass, default_taxonomy

FORMAT_VERSION = 1


class TaxonomyMismatchError(ValueError):
    """The model was trained against a different taxonomy tree than the one it is loaded with."""


@dataclass
class ModelConfig:
    arch: str
    preprocessing: Preprocessing
    classes: list[TrainingClass]
    taxonomy_version: str
    taxonomy_fingerprint: str
    operating_point: OperatingPoint = field(default_factory=OperatingPoint)  # photos of unknown modality
    operating_points: dict[str, OperatingPoint] = field(default_factory=dict)  # per modality: dermoscopic, clinical
    modality_head: dict | None = None  # the modality recogniser beside the weights (models/modality.py)
    gate: dict | None = None  # the photo gate: its thresholds and its heads' file (gate/); None: classical checks only
    training: dict = field(default_factory=dict)  # data, command, epochs, metrics: provenance for the model card
    format_version: int = FORMAT_VERSION

    @property
    def class_nodes(self) -> list[str]:
        return [c.node for c in self.classes]

    def operating_point_for(self, modality: str | None) -> OperatingPoint:
        """The modality's own operating point where validation data chose one, else the pooled one."""
        return self.operating_points.get(modality or "", self.operating_point)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["preprocessing"] = self.preprocessing.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        if d.get("format_version", 1) > FORMAT_VERSION:
            raise ValueError(f"model format {d['format_version']} is newer than this dermlens understands")
        d["preprocessing"] = Preprocessing.from_dict(d["preprocessing"])
        d["classes"] = [TrainingClass(**c) for c in d["classes"]]
        d["operating_point"] = OperatingPoint(**d.get("operating_point", {}))
        d["operating_points"] = {m: OperatingPoint(**op) for m, op in (d.get("operating_points") or {}).items()}
        return cls(**d)


# -- the one on-disk format (written by models.folder, atomically) ----------------------------------------------

def load_weights(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, config dict) of a model folder written by ``save_weights`` (or by earlier dermlens versions,
    which wrote the same two files)."""
    config = read_config_dict(directory)
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: weights file missing")
    return load_file(str(weights)), config


# -- the classifier ----------------------------------------------------------------------------------------------

def save_model(directory: str | Path, model: torch.nn.Module, config: ModelConfig) -> Path:
    return save_weights(directory, model.state_dict(), config.to_dict(), metadata={"arch": config.arch})


def read_config(directory: str | Path) -> ModelConfig:
    path = Path(directory) / CONFIG_FILE
    try:
        return ModelConfig.from_dict(read_config_dict(directory))
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a valid dermlens model config ({e})") from e


def check_taxonomy(config: ModelConfig, taxonomy: Taxonomy, source: str = "model") -> None:
    unknown = [node for node in config.class_nodes if node not in taxonomy]
    if unknown or config.taxonomy_fingerprint != taxonomy.fingerprint():
        raise TaxonomyMismatchError(
            f"{source}: trained on taxonomy {config.taxonomy_version} ({config.taxonomy_fingerprint}), "
            f"but the loaded taxonomy is {taxonomy.version} ({taxonomy.fingerprint()})"
            + (f"; unknown training-class nodes: {unknown}" if unknown else "")
            + ". Retrain the model, or load it with the taxonomy file it was trained with."
        )


def load_model(directory: str | Path, taxonomy: Taxonomy | None = None) -> tuple[torch.nn.Module, ModelConfig]:
    """Rebuild the network from its config and fill it with the saved weights (eval mode)."""
    directory = Path(directory)
    config = read_config(directory)
    check_taxonomy(config, taxonomy or default_taxonomy(), str(directory))
    model, _ = create_backbone(config.arch, num_classes=len(config.classes), pretrained=False)
    state_dict, _ = load_weights(directory)
    model.load_state_dict(state_dict)
    model.eval()
    return model, config
