"""Inference engines: what turns a batch of preprocessed images into training-class probabilities.

Every engine answers ``class_probabilities(batch, tta) -> torch.Tensor (batch, n_classes) float32``, averaging the
softmax over ``tta`` dihedral views (flips and right-angle rotations, see ``models.inference.tta_views``). The
Predictor holds one engine and does the rest (tree sum, top-5, triage) the same way whichever it is.

    torch fp32   the network in PyTorch eager mode (exact reference)
    torch bf16   the same under CPU autocast to bfloat16 (AVX-512 BF16 / AMX matrix units; about 3 significant digits)
    onnx  fp32   ONNX Runtime on the exported graph (within 1e-4 of torch)
    onnx  int8   ONNX Runtime on the statically quantized graph (calibrated; see ``deploy.onnx_export``)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dermlens.models.inference import predict_batch, tta_views

ENGINES = ("torch", "onnx")
PRECISIONS = {"torch": ("fp32", "bf16"), "onnx": ("fp32", "int8")}


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

    def class_probabilities(self, batch: torch.Tensor, tta: int = 1) -> torch.Tensor:
        if self.precision == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return predict_batch(self.model, batch, tta)
        return predict_batch(self.model, batch, tta)

    def __repr__(self) -> str:
        return f"TorchEngine({self.precision})"


class OnnxEngine:
    """ONNX Runtime on an exported file (``deploy.onnx_export``): preprocessed images in, probabilities out."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        from dermlens.deploy.onnx_export import read_metadata, session_options

        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        self.precision = self.metadata.get("dermlens_precision", "fp32")
        self.session = ort.InferenceSession(str(self.path), session_options(threads), providers=["CPUExecutionProvider"])

    def run(self, batch: np.ndarray) -> np.ndarray:
        from dermlens.deploy.onnx_export import onnx_class_probabilities

        return onnx_class_probabilities(self.session, batch)

    def class_probabilities(self, batch: torch.Tensor, tta: int = 1) -> torch.Tensor:
        views = [self.run(view.contiguous().numpy()) for view in tta_views(batch, tta)]
        return torch.from_numpy(np.mean(views, axis=0, dtype=np.float32) if len(views) > 1 else views[0])

    def __repr__(self) -> str:
        return f"OnnxEngine({self.precision}, {self.path})"


def make_engine(model_dir: Path, model: torch.nn.Module, config, engine: str = "torch", precision: str = "fp32",
                threads: int | None = None):
    """The engine for a loaded model; with ``onnx`` the model's export is found, or made and cached (fp32)."""
    check_engine(engine, precision)
    if engine == "torch":
        return TorchEngine(model, precision)
    from dermlens.deploy.onnx_export import ensure_export

    location = ensure_export(model_dir, precision, network=model, config=config)
    return OnnxEngine(location.path, threads=threads)
