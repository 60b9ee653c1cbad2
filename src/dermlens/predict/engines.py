"""Inference engines: what turns a batch of preprocessed images into training-class probabilities.

Every engine answers ``class_probabilities(batch, tta) -> torch.Tensor (batch, n_classes) float32``, averaging the
softmax over ``tta`` dihedral views (flips and right-angle rotations, see ``models.inference.tta_views``). An exact
engine (fp32) also answers ``probabilities_and_embeddings(batch)`` in one pass: the probabilities and the
classifier's input, which the gate and the modality recogniser read. The Predictor holds one engine and does the
rest (tree sum, top-5, triage) the same way whichever it is.

    auto  fp32   ONNX Runtime fp32 when onnxruntime is installed and the model exports, else torch fp32 (the default;
                 with bf16 or int8, auto is the engine that runs that precision)
    torch fp32   the network in PyTorch eager mode (exact reference; what autograd, e.g. saliency, needs)
    torch bf16   the same under CPU autocast to bfloat16 (AVX-512 BF16 / AMX matrix units; about 3 significant digits)
    onnx  fp32   ONNX Runtime on the exported graph (within 1e-5 of torch; 131 vs 47 images/s end to end on an idle
                 2-core machine, benchmarks/inference.py)
    onnx  int8   ONNX Runtime on the statically quantized graph (calibrated; see ``deploy.onnx_export``)
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from dermlens.extras import MissingExtraError
from dermlens.models.features import classifier_layer, pre_logits
from dermlens.models.inference import predict_batch, tta_views

ENGINES = ("auto", "torch", "onnx")
PRECISIONS = {"auto": ("fp32", "bf16", "int8"), "torch": ("fp32", "bf16"), "onnx": ("fp32", "int8")}


def check_engine(engine: str, precision: str) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}; got {engine!r}")
    if precision not in PRECISIONS[engine]:
        raise ValueError(f"engine {engine!r} runs precision {' or '.join(PRECISIONS[engine])}; got {precision!r}")


class TorchEngine:
    def __init__(self, model: torch.nn.Module, precision: str = "fp32"):
        check_engine("torch", precision)
        self.model = model
        self.precision = precision
        self.name = f"torch {precision}"
        self.exact = precision == "fp32"

    def class_probabilities(self, batch: torch.Tensor, tta: int = 1) -> torch.Tensor:
        if self.precision == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return predict_batch(self.model, batch, tta)
        return predict_batch(self.model, batch, tta)

    @torch.inference_mode()
    def probabilities_and_embeddings(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the classifier's last layer on the embedding gives exactly the model's logits (models.features)
        embeddings = pre_logits(self.model, batch)
        return torch.softmax(classifier_layer(self.model)(embeddings).float(), -1), embeddings

    def __repr__(self) -> str:
        return f"TorchEngine({self.precision})"


class OnnxEngine:
    """ONNX Runtime on an exported file (``deploy.onnx_export``): preprocessed images in, probabilities out."""

    def __init__(self, path: str | Path, threads: int | None = None):
        from dermlens.deploy.onnx_export import EMBEDDING_NAME, onnxruntime, read_metadata, session_options

        ort = onnxruntime()
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        self.precision = self.metadata.get("dermlens_precision", "fp32")
        self.name = f"onnx {self.precision}"
        self.session = ort.InferenceSession(str(self.path), session_options(threads), providers=["CPUExecutionProvider"])
        # int8 embeddings are quantized: the gate's thresholds were set on exact ones, so they come from torch
        self.exact = self.precision == "fp32" and EMBEDDING_NAME in {o.name for o in self.session.get_outputs()}

    def run(self, batch: np.ndarray) -> np.ndarray:
        from dermlens.deploy.onnx_export import onnx_class_probabilities

        return onnx_class_probabilities(self.session, batch)

    def class_probabilities(self, batch: torch.Tensor, tta: int = 1) -> torch.Tensor:
        views = [self.run(view.contiguous().numpy()) for view in tta_views(batch, tta)]
        return torch.from_numpy(np.mean(views, axis=0, dtype=np.float32) if len(views) > 1 else views[0])

    def probabilities_and_embeddings(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from dermlens.deploy.onnx_export import onnx_probabilities_and_embeddings

        probabilities, embeddings = onnx_probabilities_and_embeddings(self.session, batch.contiguous().numpy())
        return torch.from_numpy(probabilities), torch.from_numpy(embeddings)

    def __repr__(self) -> str:
        return f"OnnxEngine({self.precision}, {self.path})"


def make_engine(model_dir: Path, model: torch.nn.Module, config, engine: str = "auto", precision: str = "fp32",
                threads: int | None = None):
    """The engine for a loaded model; with ``onnx`` the model's export is found, or made and cached (fp32).

    ``auto`` is the fastest exact engine: ONNX Runtime fp32 when onnxruntime is installed and the export can be
    found or made, else PyTorch fp32 (the same probabilities within 1e-5, so falling back changes no answer).
    With a reduced precision it is the one engine that runs it (bf16: torch, int8: onnx).
    """
    check_engine(engine, precision)
    if engine == "auto" and precision != "fp32":
        engine = "torch" if precision == "bf16" else "onnx"
    if engine == "torch":
        return TorchEngine(model, precision)
    from dermlens.deploy.onnx_export import ensure_export, onnxruntime

    if engine == "onnx":
        return OnnxEngine(ensure_export(model_dir, precision, network=model, config=config).path, threads=threads)
    try:
        onnxruntime()  # checked first: without it an export would be made for nothing
        return OnnxEngine(ensure_export(model_dir, "fp32", network=model, config=config).path, threads=threads)
    except MissingExtraError:  # the deploy extra is not installed: PyTorch, silently (it is the documented default)
        return TorchEngine(model, "fp32")
    except Exception as error:  # noqa: BLE001 - any failure to export (read-only cache, exporter bug) costs speed only
        warnings.warn(f"{model_dir}: ONNX export failed ({type(error).__name__}: {error}); predicting with PyTorch. "
                      "Set DERMLENS_CACHE to a writable folder, or pass engine='torch' to silence this.", stacklevel=3)
        return TorchEngine(model, "fp32")
