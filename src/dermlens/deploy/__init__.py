"""Deployment: ONNX export (fp32 and calibrated int8), inference engines, batch prediction over archives.

    dermlens export --format onnx [--int8 --calibration-data D]      -> model.onnx / model.int8.onnx
    Predictor(model, engine="onnx", precision="fp32"|"int8")         -> ONNX Runtime behind the same API
    dermlens predict FOLDER|LIST.csv --out DIR [--resume]            -> rows written as they come
"""
from dermlens.deploy.engines import OnnxEngine, TorchEngine, make_engine
from dermlens.deploy.onnx_export import ensure_export, export_model, export_onnx, quantize_int8

__all__ = ["OnnxEngine", "TorchEngine", "ensure_export", "export_model", "export_onnx", "make_engine", "quantize_int8"]
