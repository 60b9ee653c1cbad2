"""ONNX export and the inference engines: parity with PyTorch, the export cache keyed by the weights' hash,
calibrated int8, and the engines behind the Predictor's unchanged API."""
from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from safetensors.torch import load_file, save_file

from dermlens.predict.engines import OnnxEngine, TorchEngine
from dermlens.deploy.onnx_export import (
    FILE_NAMES,
    MissingExportError,
    cached_export_path,
    ensure_export,
    export_onnx,
    freeze_same_padding,
    read_metadata,
    weights_digest,
)
from dermlens.predict.export import export_model
from dermlens.deploy.quantize import calibration_images
from dermlens.models import load_model
from dermlens.models.features import pre_logits
from dermlens.models.inference import predict_batch
from dermlens.predict import Predictor

PARITY = 1e-4


@pytest.fixture(scope="module")
def images(synthetic_parts, predictor) -> torch.Tensor:
    """Preprocessed test images, as the Predictor prepares them."""
    return torch.stack([predictor.preprocess(r.path) for r in synthetic_parts["test"]])


@pytest.fixture(scope="module")
def fp32_export(tiny_model_dir):
    return ensure_export(tiny_model_dir, "fp32").path


@pytest.fixture(scope="module")
def int8_export(tiny_model_dir, synthetic_labels_csv):
    return export_model(tiny_model_dir, int8=True, calibration_data=synthetic_labels_csv.parent)["int8"]


def test_fp32_onnx_probabilities_match_pytorch_within_1e_4(tiny_model_dir, images, fp32_export):
    model, _ = load_model(tiny_model_dir)
    engine = OnnxEngine(fp32_export)
    noise = torch.randn(5, *images.shape[1:], generator=torch.Generator().manual_seed(0))
    for batch in (images[:1], images[:3], images, noise):  # the batch axis is dynamic
        reference = predict_batch(model, batch).numpy()
        got = engine.class_probabilities(batch).numpy()
        assert got.shape == reference.shape
        assert np.abs(got - reference).max() < PARITY
        assert np.allclose(got.sum(1), 1, atol=1e-5)  # probabilities come out, not logits


def test_the_export_also_gives_the_embedding_the_classifier_reads(tiny_model_dir, images, fp32_export):
    model, _ = load_model(tiny_model_dir)
    probabilities, embeddings = OnnxEngine(fp32_export).probabilities_and_embeddings(images)
    assert torch.allclose(embeddings, pre_logits(model, images), atol=1e-4)
    assert np.abs(probabilities.numpy() - predict_batch(model, images).numpy()).max() < PARITY


@pytest.mark.slow
def test_tta_views_are_averaged_the_same_way(tiny_model_dir, images, fp32_export):
    model, _ = load_model(tiny_model_dir)
    engine = OnnxEngine(fp32_export)
    for views in (2, 8):
        assert np.abs(engine.class_probabilities(images, views).numpy() - predict_batch(model, images, views).numpy()).max() < PARITY
    assert np.abs(engine.class_probabilities(images, 8).numpy() - engine.class_probabilities(images, 1).numpy()).max() > 1e-3


def test_frozen_same_padding_changes_no_output(tiny_model_dir, images):
    model, config = load_model(tiny_model_dir)
    frozen = freeze_same_padding(model, config.preprocessing.size)
    assert not any(type(m).__name__ == "Conv2dSame" for m in frozen.modules())
    assert any(type(m).__name__ == "Conv2dSame" for m in model.modules())  # the original is left alone
    with torch.no_grad():
        assert torch.allclose(frozen(images), model(images), atol=1e-5)


def test_export_carries_what_it_was_made_from(tiny_model_dir, fp32_export):
    meta = read_metadata(fp32_export)
    _, config = load_model(tiny_model_dir)
    assert meta["dermlens_weights_sha256"] == weights_digest(tiny_model_dir)
    assert meta["dermlens_precision"] == "fp32"
    assert json.loads(meta["dermlens_classes"]) == config.class_nodes
    graph = onnx.load(str(fp32_export)).graph
    batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch" and not batch_dim.HasField("dim_value")
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:]] == [3, config.preprocessing.size, config.preprocessing.size]


def test_first_use_exports_once_into_the_cache_keyed_by_the_weights(tiny_model_dir, tmp_path, private_export_cache):
    first = ensure_export(tiny_model_dir, "fp32")
    again = ensure_export(tiny_model_dir, "fp32")
    assert again.path == first.path and not again.made_now
    assert first.path == cached_export_path(weights_digest(tiny_model_dir), "fp32")
    assert private_export_cache in first.path.parents
    assert not (tiny_model_dir / FILE_NAMES["fp32"]).exists()  # the model folder is not written to

    # Other weights in a copy of the folder: another key, another export.
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    state = load_file(str(other / "model.safetensors"))
    key = next(k for k in state if k.startswith("classifier.bias"))
    state[key] = state[key] + 0.5
    save_file(state, str(other / "model.safetensors"))
    changed = ensure_export(other, "fp32")
    assert changed.made_now and changed.path != first.path


def test_an_export_next_to_the_model_is_used_only_when_its_hash_matches(tiny_model_dir, tmp_path):
    model_dir = tmp_path / "shipped"
    shutil.copytree(tiny_model_dir, model_dir)
    export_onnx(model_dir, model_dir / "model.onnx")
    assert ensure_export(model_dir, "fp32").path == model_dir / "model.onnx"

    stale = tmp_path / "stale"
    shutil.copytree(tiny_model_dir, stale)
    shutil.copy(model_dir / "model.onnx", stale / "model.onnx")
    state = load_file(str(stale / "model.safetensors"))
    save_file({k: v * 1.01 if v.is_floating_point() else v for k, v in state.items()}, str(stale / "model.safetensors"))
    assert ensure_export(stale, "fp32").path != stale / "model.onnx"


def test_predictor_api_is_the_same_with_the_onnx_engine(tiny_model_dir, synthetic_parts, fp32_export):
    files = [str(r.path) for r in synthetic_parts["test"]] + ["/no/such/file.jpg"]
    predictor = Predictor(tiny_model_dir, engine="torch")
    onnx_predictor = Predictor(tiny_model_dir, engine="onnx")
    assert isinstance(onnx_predictor.engine, OnnxEngine) and isinstance(predictor.engine, TorchEngine)
    a, b = predictor.predict(files), onnx_predictor.predict(files)
    assert [p.image for p in a] == [p.image for p in b]
    assert b[-1].error == "file not found" and not b[-1].probabilities
    for x, y in zip(a[:-1], b[:-1]):
        assert x.triage == y.triage or abs(x.probabilities["malignant"] - predictor.operating_point.threshold) < PARITY
        assert max(abs(x.probabilities[n] - y.probabilities[n]) for n in x.probabilities) < PARITY
    records = synthetic_parts["test"]
    assert np.abs(onnx_predictor.predict_records(records, num_workers=0, progress=False)
                  - predictor.predict_records(records, num_workers=0, progress=False)).max() < PARITY


def test_bf16_autocast_stays_close_to_fp32(tiny_model_dir, images, predictor):
    bf16 = Predictor(tiny_model_dir, precision="bf16")
    exact = predictor.class_probabilities(images)
    approx = bf16.class_probabilities(images)
    assert np.allclose(approx.sum(1), 1)
    assert 0 < np.abs(approx - exact).max() < 0.1  # really bf16 (not fp32), and still the same classifier


def _has_exact_int8_dot_products() -> bool:
    """True on CPUs whose int8 kernels accumulate u8 x s8 products in int32 without an int16 step: ARM (sdot/udot)
    and x86 with VNNI (AVX512-VNNI or AVX-VNNI). False on other x86, and when the flags cannot be read."""
    import platform

    if platform.machine().lower() in ("arm64", "aarch64"):
        return True
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def _simulated_int8(int8_path, images: torch.Tensor) -> np.ndarray:
    """What the int8 file means, computed in float: with graph optimizations off, ONNX Runtime does not fuse the
    QuantizeLinear/DequantizeLinear pairs into integer kernels but runs them as written (round, clip, rescale) around
    float convolutions. Every CPU computes this the same way up to float rounding, so it is the reference that does
    not depend on which int8 instructions the CPU has."""
    import onnxruntime as ort

    from dermlens.deploy.onnx_export import onnx_class_probabilities

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(int8_path), options, providers=["CPUExecutionProvider"])
    return onnx_class_probabilities(session, images.numpy())


def test_int8_export_is_quantized(tiny_model_dir, int8_export):
    ops = Counter(node.op_type for node in onnx.load(str(int8_export)).graph.node)
    assert ops["QuantizeLinear"] > 10 and ops["DequantizeLinear"] > 10
    assert ops["Softmax"] == 1  # the probabilities themselves stay float
    meta = read_metadata(int8_export)
    assert meta["dermlens_precision"] == "int8" and int(meta["dermlens_calibration_images"]) > 0
    assert meta["dermlens_weights_sha256"] == weights_digest(tiny_model_dir)


def test_int8_quantization_tracks_fp32(tiny_model_dir, images, fp32_export, int8_export):
    """The quantization itself (calibrated scales, 8-bit weights and activations), judged on its float simulation:
    the same numbers on every CPU, so these bounds are about the quantization and not the machine. Measured on an
    AMD EPYC (Zen 4): mean |difference| 0.008, correlation 0.993; the bounds leave 6x and 0.09 of margin for other
    float rounding and other calibration draws."""
    exact = OnnxEngine(fp32_export).class_probabilities(images).numpy()
    simulated = _simulated_int8(int8_export, images)
    assert np.allclose(simulated.sum(1), 1, atol=1e-4)
    assert np.abs(simulated - exact).mean() < 0.05
    assert np.corrcoef(simulated.ravel(), exact.ravel())[0, 1] > 0.9


def test_int8_engine_computes_the_quantized_model(tiny_model_dir, images, int8_export):
    """The int8 engine (ONNX Runtime's integer kernels, chosen by the CPU) against the float simulation of the same
    file, computed on the same machine.

    With exact int32 accumulation (ARM, x86 with VNNI) the kernels differ from the simulation only by rounding each
    requantized activation to the nearest step (half a step per layer): measured 0.002 mean, 0.025 at most on the
    AMD EPYC (Zen 4, AVX512-VNNI), so 0.02 mean and 0.15 at most hold with margin. x86 CPUs without VNNI multiply
    with VPMADDUBSW, whose pairs of u8 x s8 products saturate at the int16 limit (ONNX Runtime documents it; the
    fix would be 7-bit weights, which cost this model far more: correlation with fp32 0.92 instead of 0.99). How
    much a saturated sum moves the output has no bound, so there the test asks only that the engine is recognisably
    the same classifier: probabilities, correlated with the simulation (a CPU without VNNI measured 0.897 against
    fp32, where the simulation is 0.99)."""
    engine = Predictor(tiny_model_dir, engine="onnx", precision="int8").engine
    integer = engine.class_probabilities(images).numpy()
    simulated = _simulated_int8(int8_export, images)
    assert np.allclose(integer.sum(1), 1, atol=1e-4)
    if _has_exact_int8_dot_products():
        assert np.abs(integer - simulated).mean() < 0.02
        assert np.abs(integer - simulated).max() < 0.15
    else:
        assert np.corrcoef(integer.ravel(), simulated.ravel())[0, 1] > 0.7


def test_int8_is_never_made_silently(tmp_path, tiny_model_dir):
    model_dir = tmp_path / "no-int8"
    shutil.copytree(tiny_model_dir, model_dir)
    state = load_file(str(model_dir / "model.safetensors"))
    save_file({k: v * 1.001 if v.is_floating_point() else v for k, v in state.items()}, str(model_dir / "model.safetensors"))
    with pytest.raises(MissingExportError, match="dermlens export --format onnx --int8 --calibration-data"):
        Predictor(model_dir, engine="onnx", precision="int8")


@pytest.mark.parametrize("engine, precision", [("onnx", "bf16"), ("torch", "int8"), ("tensorrt", "fp32")])
def test_unsupported_engine_and_precision_pairs_are_refused(tiny_model_dir, engine, precision):
    with pytest.raises(ValueError, match="engine"):
        Predictor(tiny_model_dir, engine=engine, precision=precision)


def test_calibration_takes_a_folder_or_a_dataset_s_training_split(tmp_path, synthetic_labels_csv):
    folder = synthetic_labels_csv.parent / "images"
    from_folder = calibration_images(folder, limit=1000)
    assert len(from_folder) == 60 and all(p.suffix == ".png" for p in from_folder)
    assert len(calibration_images(folder, limit=10)) == 10
    split_csv = tmp_path / "labels.csv"
    lines = synthetic_labels_csv.read_text().splitlines()
    rows = [lines[0].replace("path,label,group", "image,diagnosis,lesion_id") + ",split"]
    rows += [line + (",train" if i % 3 else ",test") for i, line in enumerate(lines[1:])]
    split_csv.write_text("\n".join(rows).replace("images/", str(folder) + "/") + "\n")
    chosen = calibration_images(split_csv, limit=1000)
    assert len(chosen) == 40  # the 20 test images are not used
    with pytest.raises(FileNotFoundError):
        calibration_images(tmp_path / "nothing-here")


def test_bundled_model_onnx_parity_at_full_size():
    from dermlens.predict import BUNDLED_MODEL_DIR, NoModelError, bundled_model_dir

    try:
        model_dir = bundled_model_dir()
    except NoModelError:
        pytest.skip(f"no bundled model in {BUNDLED_MODEL_DIR} (it is trained separately)")
    reference = Predictor(model_dir)
    engine = OnnxEngine(ensure_export(model_dir, "fp32").path)
    size = reference.config.preprocessing.size
    batch = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(1))
    assert np.abs(engine.class_probabilities(batch).numpy() - reference.engine.class_probabilities(batch).numpy()).max() < PARITY


def test_int8_export_records_how_many_triage_calls_it_changes(int8_export, tiny_model_dir):
    from dermlens.deploy.quantize import int8_triage_shift
    from dermlens.models import read_config

    shift = int8_triage_shift(int8_export)
    config = read_config(tiny_model_dir)
    assert shift["images"] > 0
    # the points a photo can get: the tiny model has no modality recogniser, so its pooled one and each modality's
    assert set(shift["operating_points"]) == {"unknown modality", *config.operating_points}
    for point in shift["operating_points"].values():
        assert 0 <= point["calls_changed"] <= shift["images"] and point["max_probability_change"] >= 0


def test_an_exported_folder_is_a_model_folder_predict_runs_on(tiny_model_dir, tmp_path, images):
    out = tmp_path / "exported"
    written = export_model(tiny_model_dir, out)
    assert written["fp32"] == out / "model.onnx"
    onnx_predictor = Predictor(out, engine="onnx")
    assert onnx_predictor.engine.path == out / "model.onnx"  # the folder's own export, found by its weights' hash
    reference = Predictor(tiny_model_dir, engine="torch").engine.class_probabilities(images).numpy()
    np.testing.assert_allclose(onnx_predictor.engine.class_probabilities(images).numpy(), reference, atol=1e-4)
