"""Deployment: ONNX export (fp32 and calibrated int8) of a saved model.

    dermlens export --format onnx [--int8 --calibration-data D]      -> model.onnx / model.int8.onnx

The engines that run an export, and batch prediction, are in the predict package, one layer up: it imports
this one, never the other way round.
"""
from dermlens.deploy.export import export_model
from dermlens.deploy.onnx_export import ensure_export, export_onnx
from dermlens.deploy.quantize import quantize_int8

__all__ = ["ensure_export", "export_model", "export_onnx", "quantize_int8"]
