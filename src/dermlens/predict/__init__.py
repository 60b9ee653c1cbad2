"""Prediction: the one Predictor (load a model once, answer many photos), its engines and batch prediction.

- ``predictor``  Predictor: gate, network, tree sum and triage for any image input
- ``analysis``   Analysis (also named Prediction): the one typed answer per photo that every consumer reads
- ``engines``    the network behind the Predictor: ``auto`` (default: ONNX Runtime fp32 when installed, else
                 PyTorch), PyTorch (autograd, saliency: ask for ``engine="torch"``) or ONNX Runtime (fast, exact)
- ``batch``      folders and lists of photos to CSV/JSON, row by row, resumable, bad files reported not fatal

ONNX export itself lives in :mod:`dermlens.deploy`; this package calls it, never the other way round.
"""
from dermlens.predict.analysis import Analysis, Prediction
from dermlens.predict.predictor import BUNDLED_MODEL_DIR, NoModelError, Predictor, bundled_model_dir, describe_model

__all__ = ["Analysis", "BUNDLED_MODEL_DIR", "NoModelError", "Prediction", "Predictor", "bundled_model_dir",
           "describe_model"]
