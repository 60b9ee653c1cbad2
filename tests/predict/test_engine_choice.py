"""engine="auto" (the default): ONNX Runtime fp32 when it can, PyTorch fp32 otherwise, the same answers either way,
and the engine that ran is always visible."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from dermlens.deploy.onnx_export import MissingExportError
from dermlens.extras import MissingExtraError
from dermlens.predict import Predictor
from dermlens.predict.batch import predict_files


@pytest.fixture(scope="module")
def images(synthetic_parts, predictor) -> torch.Tensor:
    return torch.stack([predictor.preprocess(r.path) for r in synthetic_parts["test"]])


@pytest.fixture(scope="module")
def torch_predictor(tiny_model_dir):
    return Predictor(tiny_model_dir, engine="torch")


def test_auto_runs_onnx_fp32_with_torch_s_answers_within_1e_5(tiny_model_dir, images, torch_predictor):
    auto = Predictor(tiny_model_dir)
    assert auto.engine_name == "onnx fp32" and torch_predictor.engine_name == "torch fp32"
    names = [f"img{k}" for k in range(len(images))]
    got, reference = auto.predict_tensors(images, names), torch_predictor.predict_tensors(images, names)
    for a, b in zip(got, reference):
        assert max(abs(a.probabilities[n] - b.probabilities[n]) for n in a.probabilities) < 1e-5
        assert (a.triage, a.quality, a.modality) == (b.triage, b.quality, b.modality)
        if b.ood_score is not None:  # the gate reads the export's embedding output: one pass, as with torch
            assert abs(a.ood_score - b.ood_score) < 1e-4
    assert np.abs(auto.class_probabilities(images) - torch_predictor.class_probabilities(images)).max() < 1e-5


def test_auto_falls_back_to_torch_when_onnxruntime_is_missing(tiny_model_dir, images, torch_predictor, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` meets when it is not installed
    fallback = Predictor(tiny_model_dir)
    assert fallback.engine_name == "torch fp32"
    assert np.array_equal(fallback.class_probabilities(images), torch_predictor.class_probabilities(images))
    with pytest.raises(MissingExtraError, match=r'ONNX inference needs onnxruntime: pip install "dermlens\[deploy\]"'):
        Predictor(tiny_model_dir, engine="onnx")  # asked for by name, it is an error


def test_auto_falls_back_to_torch_with_a_warning_when_the_export_cannot_be_cached(tiny_model_dir, tmp_path,
                                                                                   monkeypatch):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")  # the cache root is a file: nothing can be written under it
    monkeypatch.setenv("DERMLENS_CACHE", str(blocked))
    with pytest.warns(UserWarning, match="ONNX export failed .* predicting with PyTorch"):
        predictor = Predictor(tiny_model_dir)
    assert predictor.engine_name == "torch fp32"


def test_the_engine_is_recorded_in_the_batch_summary(tiny_model_dir, synthetic_parts, torch_predictor, tmp_path):
    files = [r.path for r in synthetic_parts["test"][:3]]
    summary = predict_files(torch_predictor, files, tmp_path / "p.csv", num_workers=0, progress=False)
    assert summary.engine == "torch fp32"


def test_auto_with_a_reduced_precision_is_the_engine_that_runs_it(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DERMLENS_CACHE", str(tmp_path))  # an empty cache: other tests may have made an int8 export
    assert Predictor(tiny_model_dir, precision="bf16").engine_name == "torch bf16"
    with pytest.raises(MissingExportError, match="no int8 ONNX export"):  # int8 is ONNX's, and never made silently
        Predictor(tiny_model_dir, precision="int8")
