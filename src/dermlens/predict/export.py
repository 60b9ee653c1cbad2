"""What ``dermlens export`` does: the fp32 ONNX export, with ``int8`` the calibrated quantized one too, written to
the user cache (where the Predictor looks) or to a folder of its own that is a whole model folder; and, for int8,
how it changes the answers users get, measured on the Predictor's analyses and recorded in the int8 file.

It sits in ``predict`` (not ``deploy``) because that measure runs the fp32 and int8 Predictors: the same answers a
user of either engine gets, not a second account of how the Predictor works."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dermlens.deploy.onnx_export import FILE_NAMES, PRECISIONS, cached_export_path, export_onnx, weights_digest
from dermlens.deploy.quantize import calibration_images, quantize_int8, record_triage_shift
from dermlens.models.folder import copy_folder
from dermlens.models.modality import MODALITIES
from dermlens.models.saved import read_config

UNKNOWN_MODALITY = "unknown modality"


def export_model(model_dir: str | Path, out_dir: str | Path | None = None, *, int8: bool = False,
                 calibration_data: str | Path | None = None, calibration_size: int = 200,
                 progress: bool = False) -> dict[str, Path]:
    """The fp32 export, and with ``int8`` the quantized one too (its triage shift against fp32 recorded in it).

    Without ``out_dir`` the files go to the user cache, where ``Predictor(..., engine="onnx")`` finds them; with it,
    ``out_dir`` is a copy of the model folder with the ONNX files beside it (``dermlens predict --model OUT``).
    """
    from dermlens.data.transforms import build_eval_transform

    model_dir = Path(model_dir)
    config = read_config(model_dir)
    digest = weights_digest(model_dir, config)
    if out_dir:
        copy_folder(model_dir, Path(out_dir), skip=tuple(FILE_NAMES.values()))
    target = {p: (Path(out_dir) / FILE_NAMES[p] if out_dir else cached_export_path(digest, p)) for p in PRECISIONS}
    written = {"fp32": export_onnx(model_dir, target["fp32"])}
    if int8:
        if calibration_data is None:
            raise ValueError("--int8 needs --calibration-data (a folder of images or a dataset)")
        images = calibration_images(calibration_data, limit=calibration_size)
        written["int8"] = quantize_int8(written["fp32"], target["int8"], images,
                                        build_eval_transform(config.preprocessing), progress=progress)
        record_triage_shift(written["int8"], measure_int8_triage_shift(out_dir or model_dir, images))
    return written


def measure_int8_triage_shift(model_dir: str | Path, images: Sequence, batch_size: int = 32) -> dict:
    """How int8 moves the triage call against fp32 on ``images``, for each operating point a photo can get: each
    modality's (the photos read as that modality) and, for a model without a modality recogniser, the pooled one.
    Per point: the photos whose refer/reassure call differs and the largest change of P(node). Both sides are the
    Predictor's analyses (ONNX Runtime fp32 and int8, gate off: the call itself is compared)."""
    from dermlens.predict.predictor import Predictor

    fp32 = Predictor(model_dir, engine="onnx", precision="fp32", gate=False)
    int8 = Predictor(model_dir, engine="onnx", precision="int8", gate=False)
    modalities = [m for m in MODALITIES if m in fp32.config.operating_points]
    if fp32.modality_recogniser is None:
        modalities.append(None)
    report: dict = {"images": 0, "operating_points": {}}
    for modality in modalities:
        a32, a8 = (p.analyse(list(images), batch_size=batch_size, modality=modality) for p in (fp32, int8))
        pairs = [(x, y) for x, y in zip(a32, a8) if not (x.error or y.error)]
        report["images"] = len(pairs)
        changed = sum(x.referral is not y.referral for x, y in pairs)
        moved = max((abs(x.node_probability - y.node_probability) for x, y in pairs), default=0.0)
        report["operating_points"][modality or UNKNOWN_MODALITY] = {
            "threshold": pairs[0][0].operating_point.threshold if pairs else None,
            "calls_changed": int(changed), "max_probability_change": float(np.float64(moved)),
        }
    return report


__all__ = ["export_model", "measure_int8_triage_shift"]
