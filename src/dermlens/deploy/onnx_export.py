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
import random
import tempfile
import warnings
from collections.abc import Iterable, Sequence
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
# int8: static quantization calibrated on real images
# ----------------------------------------------------------------------------------------------------------------


def calibration_images(source: str | Path, limit: int = 200, seed: int = 0) -> list[Path]:
    """Image paths to calibrate on: a folder of images, or a dataset (its ``train`` split when it has one).

    Calibration only measures activation ranges, but test images still should not shape anything that is later
    scored on them, so a dataset with a fixed split gives its training images.
    """
    from dermlens.data.io import find_images

    source = Path(source)
    paths: list[Path] = []
    is_dataset = source.suffix.lower() == ".csv" or any(
        (source / name).is_file() for name in ("labels.csv", "metadata.csv", "HAM10000_metadata.csv"))
    if is_dataset:
        from dermlens.data.datasets import load_records

        records = load_records(source)
        train = [r for r in records if r.split == "train"]
        paths = [r.path for r in (train or records)]
    elif source.is_dir():
        paths = find_images([source])
    else:
        raise FileNotFoundError(f"{source}: calibration data must be a folder of images or a dataset")
    if not paths:
        raise ValueError(f"{source}: no calibration images found")
    if len(paths) > limit:
        paths = sorted(random.Random(seed).sample(paths, limit))
    return paths


class _ImageReader:
    """onnxruntime's CalibrationDataReader over image files, prepared exactly as the Predictor prepares them."""

    def __init__(self, paths: Sequence[Path], transform, batch_size: int = 8, progress: bool = False):
        from tqdm.auto import tqdm

        from dermlens.data.io import ImageDecodeError, load_image

        tensors = []
        for path in tqdm(paths, desc="int8: reading calibration images", unit="img", disable=not progress):
            try:
                tensors.append(transform(load_image(path)))
            except ImageDecodeError as e:  # a bad calibration image is skipped, and said
                warnings.warn(f"calibration: skipped {e}", stacklevel=2)
        if not tensors:
            raise ValueError("no readable calibration images")
        stacked = torch.stack(tensors).numpy()
        self.batches = [stacked[i:i + batch_size] for i in range(0, len(stacked), batch_size)]
        self.count = len(tensors)
        self.bar = tqdm(total=len(self.batches), desc="int8: calibrating", unit="batch", disable=not progress)
        self.set_range(0, len(self.batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._position, self._end = start_index, min(end_index, len(self.batches))

    def get_next(self) -> dict | None:
        if self._position >= self._end:
            return None
        self._position += 1
        self.bar.update(1)
        return {INPUT_NAME: self.batches[self._position - 1]}


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calibration: Iterable[Path], transform,
                  config: ModelConfig | None = None, progress: bool = False) -> Path:
    """Static int8 quantization (QDQ, per-channel int8 weights, uint8 activations: the layout ORT's x86 VNNI
    kernels run fastest) with activation ranges from ``calibration`` images. The softmax stays in float: its
    output is what the triage threshold reads, and 1/256 steps would move it."""
    onnx = _onnx()
    onnxruntime()
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    metadata = read_metadata(fp32_path)
    reader = _ImageReader(list(calibration), transform, progress=progress)
    model = onnx.load(str(fp32_path))
    softmax_nodes = [n.name for n in model.graph.node if n.op_type == "Softmax"]
    with tempfile.TemporaryDirectory() as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        tmp = _atomic_target(out_path)
        try:
            quantize_static(
                str(prepared), str(tmp), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=softmax_nodes,
                # Ranges computed batch by batch and merged: bounded memory however many images. (Not
                # CalibMaxIntermediateOutputs: in onnxruntime 1.32 it discards what it collected.)
                extra_options={"CalibStridedMinMax": 1},
            )
            reader.bar.close()
            extra = {TRIAGE_SHIFT_KEY: json.dumps(triage_shift(fp32_path, tmp, reader.batches, config))} if config else {}
            _write_metadata(tmp, {**metadata, "dermlens_precision": "int8",
                                  "dermlens_calibration_images": reader.count, **extra})
            os.replace(tmp, out_path)
        finally:
            tmp.unlink(missing_ok=True)
    return out_path


TRIAGE_SHIFT_KEY = "dermlens_int8_triage_shift"


def triage_shift(fp32_path: Path, int8_path: Path, batches: Sequence[np.ndarray], config: ModelConfig) -> dict:
    """How int8 moves the triage call, measured on the calibration images: for each operating point of the model
    (photos of unknown modality and each modality's), the number of images whose refer/reassure call differs
    from fp32's, and the largest change of P(node). int8 reuses fp32's thresholds, so a user must see this."""
    from dermlens.taxonomy import TreeSum, default_taxonomy

    ort = onnxruntime()
    sessions = [ort.InferenceSession(str(p), session_options(), providers=["CPUExecutionProvider"])
                for p in (fp32_path, int8_path)]
    probs = [np.concatenate([onnx_class_probabilities(s, b) for b in batches]).astype(np.float64) for s in sessions]
    probs = [p / p.sum(1, keepdims=True) for p in probs]  # as the Predictor renormalises
    tree_sum = TreeSum(default_taxonomy(), config.classes)
    points = {"unknown modality": config.operating_point, **config.operating_points}
    report = {"images": int(len(probs[0])), "operating_points": {}}
    for name, op in points.items():
        p32, p8 = (tree_sum.node(p, op.node) for p in probs)
        report["operating_points"][name] = {
            "threshold": op.threshold, "calls_changed": int((op.refers(p32) != op.refers(p8)).sum()),
            "max_probability_change": float(np.abs(p32 - p8).max()),
        }
    return report


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


def export_model(model_dir: str | Path, out_dir: str | Path | None = None, *, int8: bool = False,
                 calibration_data: str | Path | None = None, calibration_size: int = 200,
                 progress: bool = False) -> dict[str, Path]:
    """What ``dermlens export`` does: the fp32 export, and with ``int8`` the quantized one too.

    Without ``out_dir`` the files go to the user cache, where ``Predictor(..., engine="onnx")`` finds them.
    """
    from dermlens.data.transforms import build_eval_transform

    model_dir = Path(model_dir)
    config = read_config(model_dir)
    digest = weights_digest(model_dir, config)
    if out_dir:
        copy_model_folder(model_dir, Path(out_dir))
    target = {p: (Path(out_dir) / FILE_NAMES[p] if out_dir else cached_export_path(digest, p)) for p in PRECISIONS}
    written = {"fp32": export_onnx(model_dir, target["fp32"])}
    if int8:
        if calibration_data is None:
            raise ValueError("--int8 needs --calibration-data (a folder of images or a dataset)")
        images = calibration_images(calibration_data, limit=calibration_size)
        written["int8"] = quantize_int8(written["fp32"], target["int8"], images,
                                        build_eval_transform(config.preprocessing), config=config, progress=progress)
    return written


def copy_model_folder(model_dir: Path, out_dir: Path) -> None:
    """An exported folder is a model folder too (config, weights, gate, modality head, model card beside the ONNX
    files), so ``dermlens predict --model OUT`` runs it; the ONNX files are found there by their weights' hash."""
    import shutil

    if out_dir.resolve() == model_dir.resolve():
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in model_dir.iterdir():
        if item.is_file() and item.name not in FILE_NAMES.values():
            shutil.copy2(item, out_dir / item.name)


def int8_triage_shift(path: str | Path) -> dict | None:
    """What an int8 export recorded about its triage calls against fp32 (None for older exports)."""
    value = read_metadata(path).get(TRIAGE_SHIFT_KEY)
    return json.loads(value) if value else None


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
    return require("onnxruntime", "deploy", ONNX_FEATURE)
