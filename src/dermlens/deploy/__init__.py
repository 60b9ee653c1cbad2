"""Deployment: ONNX export (fp32 and calibrated int8) of a saved model.

    dermlens export --format onnx [--int8 --calibration-data D]      -> model.onnx / model.int8.onnx

The engines that run an export, batch prediction and what ``dermlens export`` does as a whole
(``dermlens.predict.export``: it measures int8's triage shift on the Predictor's analyses) are in the predict
package, one layer up: it imports this one, never the other way round.
"""
from dermlens.deploy.onnx_export import ensure_export, export_onnx
from dermlens.deploy.quantize import quantize_int8

__all__ = ["ensure_export", "export_onnx", "quantize_int8"]
