"""Networks (backbones with a head per training class) and how a trained one is saved and loaded."""
from dermlens.models.backbones import create_backbone, list_backbones
from dermlens.models.saved import (
    ModelConfig,
    OperatingPoint,
    TaxonomyMismatchError,
    check_taxonomy,
    load_model,
    read_config,
    save_model,
)

__all__ = [
    "ModelConfig",
    "OperatingPoint",
    "TaxonomyMismatchError",
    "check_taxonomy",
    "create_backbone",
    "list_backbones",
    "load_model",
    "read_config",
    "save_model",
]
