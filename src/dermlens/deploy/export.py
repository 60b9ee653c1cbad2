"""What ``dermlens export`` does: the fp32 ONNX export, with ``int8`` the calibrated quantized one too, written to the
user cache (where the Predictor looks) or to a folder of its own that is a whole model folder."""
from __future__ import annotations

import shutil
from pathlib import Path

from dermlens.deploy.onnx_export import FILE_NAMES, PRECISIONS, cached_export_path, export_onnx, weights_digest
from dermlens.deploy.quantize import calibration_images, quantize_int8
from dermlens.models.saved import read_config


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
    if out_dir.resolve() == model_dir.resolve():
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in model_dir.iterdir():
        if item.is_file() and item.name not in FILE_NAMES.values():
            shutil.copy2(item, out_dir / item.name)
