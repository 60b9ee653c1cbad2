"""int8: static quantization of an fp32 ONNX export, calibrated on real images. What it does to the triage calls
(int8 reuses fp32's referral thresholds) is measured on the Predictor's analyses (``dermlens.predict.export``) and
recorded in the file here."""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from dermlens.deploy.onnx_export import INPUT_NAME, _atomic_target, _onnx, _write_metadata, onnxruntime, read_metadata


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
                  progress: bool = False) -> Path:
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
            _write_metadata(tmp, {**metadata, "dermlens_precision": "int8",
                                  "dermlens_calibration_images": reader.count})
            os.replace(tmp, out_path)
        finally:
            tmp.unlink(missing_ok=True)
    return out_path


TRIAGE_SHIFT_KEY = "dermlens_int8_triage_shift"


def record_triage_shift(int8_path: str | Path, report: dict) -> None:
    """Keep ``report`` (how int8 moves the triage calls against fp32) in the int8 file's metadata; atomic."""
    int8_path = Path(int8_path)
    tmp = _atomic_target(int8_path)
    try:
        shutil.copy2(int8_path, tmp)
        _write_metadata(tmp, {**read_metadata(int8_path), TRIAGE_SHIFT_KEY: json.dumps(report)})
        os.replace(tmp, int8_path)
    finally:
        tmp.unlink(missing_ok=True)


def int8_triage_shift(path: str | Path) -> dict | None:
    """What an int8 export recorded about its triage calls against fp32 (None for older exports)."""
    value = read_metadata(path).get(TRIAGE_SHIFT_KEY)
    return json.loads(value) if value else None
