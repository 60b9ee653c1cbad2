"""ONNX export of the whole classifier, and its int8 quantization.

    preprocessed image (batch, 3, size, size) float32 ──► network body ──► embedding (batch, n_features)
                                                                      ──► classifier ──► softmax ──► probabilities (batch, n_classes)

The embedding (the classifier's input, ``models.features.pre_logits``) is a second output so that one ONNX pass
also feeds the gate's out-of-distribution check and the modality recogniser, as one PyTorch pass does. The tree sum over the taxonomy stays in Python (a (nodes x classes) matrix product, see ``Predictor``), so one
export serves any taxonomy view of the same training classes. The batch axis is dynamic; the spatial size is the
model's own (TF-style "same" padding of EfficientNet-Lite depends on it, and a fixed size lets the exporter fold it).

Every exported file carries the SHA-256 of the weights it came from in its metadata, so a cache can never hand out
an export of other weights. Exports made on first use go to a user cache directory (``$DERMLENS_CACHE``, else
``$XDG_CACHE_HOME/dermlens``, else ``~/.cache/dermlens``) under that hash; an export shipped next to the model
(``model.onnx`` / ``model.int8.onnx`` in the model folder) is used instead when its hash matches.
The cache, not the model folder, is written because the folder may be read-only (the bundled weights inside an
installed package) or shared by several users; the digest key makes a stale entry impossible to pick up, and a
write is atomic, so concurrent first uses are safe.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dermlens.extras import require
from dermlens.models.saved import WEIGHTS_FILE, ModelConfig, read_config

EXPORT_VERSION = 2  # bump when the exported graph changes meaning; it is part of every cache key (2: + embedding)
OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
EMBEDDING_NAME = "embedding"
PRECISIONS = ("fp32", "int8")
FILE_NAMES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
ONNX_FEATURE = "ONNX export and --engine onnx"  # onnx and onnxruntime are the optional [deploy] extra


class MissingExportError(FileNotFoundError):
    """An int8 export was asked for but none exists (int8 needs calibration images, so it is never made silently)."""


class ExportedClassifier(torch.nn.Module):
    """What is exported: probabilities (the network plus its softmax, as the Predictor reads them) and the
    embedding the classifier reads (the same pooled vector as ``models.features.pre_logits``)."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network
        self.classifier = network.get_classifier()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.network.forward_head(self.network.forward_features(image), pre_logits=True)
        return self.classifier(embedding).softmax(-1), embedding


def freeze_same_padding(network: torch.nn.Module, size: int) -> torch.nn.Module:
    """A copy of ``network`` whose TF-style "same" convolutions (timm ``Conv2dSame``) pad by constants.

    ``Conv2dSame`` computes its padding from the input's shape at run time, which exports as a chain of Shape,
    Ceil and Concat nodes before a Pad: slower, and in the way of int8 fusion. The input size is fixed per model,
    so the padding is too: measured once with a dummy input, then written into a ZeroPad2d + plain Conv2d.
    """
    import copy
    import math

    from timm.layers import Conv2dSame

    network = copy.deepcopy(network).eval()
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        module.register_forward_pre_hook(lambda mod, args, name=name: sizes.__setitem__(name, tuple(args[0].shape[-2:])))
        for name, module in network.named_modules() if isinstance(module, Conv2dSame)
    ]
    with torch.no_grad():
        network(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    for name, (height, width) in sizes.items():
        same: Conv2dSame = network.get_submodule(name)
        pads = []
        for extent, k, s, d in zip((height, width), same.kernel_size, same.stride, same.dilation):
            pads.append(max((math.ceil(extent / s) - 1) * s + (k - 1) * d + 1 - extent, 0))
        pad_h, pad_w = pads
        conv = torch.nn.Conv2d(same.in_channels, same.out_channels, same.kernel_size, same.stride, 0, same.dilation,
                               same.groups, bias=same.bias is not None)
        conv.load_state_dict(same.state_dict())
        replacement = torch.nn.Sequential(
            torch.nn.ZeroPad2d((pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)), conv)
        parent_name, _, child = name.rpartition(".")
        setattr(network.get_submodule(parent_name) if parent_name else network, child, replacement)
    return network


def cache_root() -> Path:
    if os.environ.get("DERMLENS_CACHE"):
        return Path(os.environ["DERMLENS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dermlens"


def weights_digest(model_dir: str | Path, config: ModelConfig | None = None) -> str:
    """SHA-256 over the weights file and what the export depends on besides (arch, input size, classes, version)."""
    model_dir = Path(model_dir)
    config = config or read_config(model_dir)
    sha = hashlib.sha256()
    with open(model_dir / WEIGHTS_FILE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    sha.update(json.dumps({"arch": config.arch, "size": config.preprocessing.size, "classes": config.class_nodes,
                           "export_version": EXPORT_VERSION, "opset": OPSET}, sort_keys=True).encode())
    return sha.hexdigest()


def cached_export_path(digest: str, precision: str = "fp32") -> Path:
    return cache_root() / "onnx" / digest[:24] / FILE_NAMES[precision]


def read_metadata(path: str | Path) -> dict[str, str]:
    onnx = _onnx()
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def _write_metadata(path: Path, metadata: dict[str, str]) -> None:
    onnx = _onnx()
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=str(value))
    onnx.save(model, str(path))


def _atomic_target(out_path: Path) -> Path:
    """A temporary name in the target's folder: concurrent first uses never read a half-written file."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=out_path.stem + ".", suffix=".tmp.onnx", dir=out_path.parent)
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)  # mkstemp's 0600 would keep a shipped or shared export from its readers
    return Path(name)


def export_onnx(model_dir: str | Path, out_path: str | Path, *, network: torch.nn.Module | None = None,
                config: ModelConfig | None = None) -> Path:
    """Write the fp32 ONNX model of ``model_dir`` (probabilities and embedding out, dynamic batch) to ``out_path``."""
    from dermlens.models import load_model

    model_dir, out_path = Path(model_dir), Path(out_path)
    if network is None or config is None:
        network, config = load_model(model_dir)
    size = config.preprocessing.size
    wrapped = ExportedClassifier(freeze_same_padding(network, size)).eval()
    example = torch.zeros(2, 3, size, size)
    tmp = _atomic_target(out_path)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript-based exporter: exact for these CNNs, fast, and it needs no onnxscript.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", UserWarning)  # shape-inference notes of the TorchScript exporter
            torch.onnx.export(
                wrapped, (example,), str(tmp), dynamo=False, opset_version=OPSET,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME, EMBEDDING_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}, EMBEDDING_NAME: {0: "batch"}},
            )
        _write_metadata(tmp, {
            "dermlens_weights_sha256": weights_digest(model_dir, config),
            "dermlens_arch": config.arch,
            "dermlens_image_size": size,
            "dermlens_classes": json.dumps(config.class_nodes),
            "dermlens_precision": "fp32",
            "dermlens_export_version": EXPORT_VERSION,
        })
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


# ----------------------------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------------------------
# Finding (or making) the export for a model folder
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ExportLocation:
    path: Path
    made_now: bool


def find_export(model_dir: str | Path, precision: str = "fp32", digest: str | None = None) -> Path | None:
    """An existing export of exactly these weights: next to the model first, then in the user cache."""
    if precision not in PRECISIONS:
        raise ValueError(f"ONNX precision must be one of {PRECISIONS}; got {precision!r}")
    model_dir = Path(model_dir)
    digest = digest or weights_digest(model_dir)
    for candidate in (model_dir / FILE_NAMES[precision], cached_export_path(digest, precision)):
        if candidate.is_file():
            try:
                meta = read_metadata(candidate)
            except Exception:  # noqa: BLE001 - an unreadable cache file is rebuilt, not fatal
                continue
            if meta.get("dermlens_weights_sha256") == digest and meta.get("dermlens_precision") == precision:
                return candidate
    return None


def ensure_export(model_dir: str | Path, precision: str = "fp32", *, network: torch.nn.Module | None = None,
                  config: ModelConfig | None = None) -> ExportLocation:
    """The export for ``model_dir``, made and cached on first use (fp32 only: int8 needs calibration images)."""
    model_dir = Path(model_dir)
    digest = weights_digest(model_dir, config)
    found = find_export(model_dir, precision, digest)
    if found is not None:
        return ExportLocation(found, made_now=False)
    if precision == "int8":
        raise MissingExportError(
            f"{model_dir}: no int8 ONNX export of these weights; make one with "
            f"`dermlens export --format onnx --int8 --calibration-data DATA --model {model_dir}`"
        )
    path = export_onnx(model_dir, cached_export_path(digest, "fp32"), network=network, config=config)
    return ExportLocation(path, made_now=True)


def session_options(threads: int | None = None):
    ort = onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return options


def onnx_class_probabilities(session, batch: np.ndarray) -> np.ndarray:
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def onnx_probabilities_and_embeddings(session, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probabilities, embeddings = session.run([OUTPUT_NAME, EMBEDDING_NAME],
                                            {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})
    return probabilities, embeddings


def _onnx():
    return require("onnx", "deploy", ONNX_FEATURE)


def onnxruntime():
    """The onnxruntime module, or one clear error naming the extra that installs it."""
    return require("onnxruntime", "deploy", "ONNX inference")
