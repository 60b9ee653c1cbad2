"""Comparing the tissue-fraction network with the 40%-threshold and the binary U-Net on a simulated test set.

Per test image and method: fuzzy Dice and the relative tumour-area error (the area being the sum of the
fractions, in pixels). Means over images come with 95% percentile-bootstrap intervals (resampling images), overall,
by tumour diameter relative to the scanner's FWHM (the partial-volume effect grows as it falls) and by dose
(noise grows as it falls); paired bootstrap intervals for the difference between the fraction network and
each baseline on the same images.

Main methods (all inside the same tumour box, see ``baselines``):
- ``fraction``     the soft-label network's output, a fraction in [0, 1] per pixel
- ``threshold40``  40% of the box's maximum uptake (binary)
- ``binary_unet``  the binary-trained network's output thresholded at 0.5 (binary)
Supplementary: the fraction output binarised at 0.5 (separates the training target from the fractional output)
and both networks over the whole image without the box (they must find the tumour themselves).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dermlens.evaluate.bootstrap import bootstrap_ci
from dermlens.segment.metrics import area_error, fuzzy_dice, jaccard
from dermlens.pet.baselines import default_margin, threshold_max, tumour_voi
from dermlens.pet.dataset import load_dataset
from dermlens.pet.training import load_pet_model, predict_fractions

MAIN_METHODS = ("fraction", "threshold40", "binary_unet")
DIAMETER_EDGES = (0.0, 1.5, 2.5, 4.0, float("inf"))  # tumour equivalent diameter / FWHM
N_DOSE_BINS = 4


def _mean_ci(values: np.ndarray, n_boot: int) -> tuple[float, list[float]]:
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return float("nan"), [float("nan"), float("nan")]
    low, high = bootstrap_ci(np.mean, [values], n=n_boot, seed=0)
    return float(values.mean()), [low, high]


def per_image_scores(pred: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image fuzzy Dice, relative area error, signed relative area error (bias) and Jaccard (at 0.5)."""
    pred_area, true_area = pred.sum(axis=(1, 2)), true.sum(axis=(1, 2))
    return {
        "fuzzy_dice": np.array([fuzzy_dice(p, t) for p, t in zip(pred, true)]),
        "area_error": np.array([area_error(p, t) for p, t in zip(pred, true)]),
        "area_bias": (pred_area - true_area) / true_area,
        "jaccard": np.array([jaccard(p, t) for p, t in zip(pred, true)]),
    }


def summarise(scores: dict[str, np.ndarray], n_boot: int, diameter_ratio: np.ndarray, dose: np.ndarray,
              dose_edges: np.ndarray) -> dict:
    out = {}
    for name, values in scores.items():
        out[name], out[f"{name}_ci95"] = _mean_ci(values, n_boot)
    out["n"] = int(len(diameter_ratio))
    for key, variable, edges in (("by_diameter", diameter_ratio, DIAMETER_EDGES), ("by_dose", dose, dose_edges)):
        rows = []
        for low, high in zip(edges[:-1], edges[1:]):
            inside = (variable >= low) & (variable < high)
            row = {"low": float(low), "high": float(high), "n": int(inside.sum())}
            for name in ("fuzzy_dice", "area_error"):
                row[name], row[f"{name}_ci95"] = _mean_ci(scores[name][inside], n_boot)
            rows.append(row)
        out[key] = rows
    small, large = out["by_diameter"][0], out["by_diameter"][-1]
    if small["n"] and large["n"]:  # how much worse the smallest tumours fare than the largest
        out["partial_volume_sensitivity"] = {"fuzzy_dice_drop": large["fuzzy_dice"] - small["fuzzy_dice"],
                                             "area_error_rise": small["area_error"] - large["area_error"]}
    return out


def paired_difference(a: np.ndarray, b: np.ndarray, n_boot: int) -> dict:
    """Mean of a - b over the same images with a paired bootstrap 95% interval."""
    low, high = bootstrap_ci(lambda x, y: float(np.mean(x - y)), [a, b], n=n_boot, seed=0)
    return {"mean": float(np.mean(a - b)), "ci95": [low, high]}


def evaluate_pet(test_dir: str | Path, model_dirs: list[str | Path], out_dir: str | Path | None = None,
                 n_boot: int = 1000, margin: int | None = None, progress: bool = True,
                 report: bool = True) -> dict:
    """Score every method on the test set; write ``metrics.json`` (and ``report.html``) into ``out_dir``."""
    data = load_dataset(test_dir)
    cfg = data.config
    margin = default_margin(cfg.fwhm_mm, cfg.pixel_mm) if margin is None else margin
    truth = data.fractions.astype(np.float64)
    voi = np.stack([tumour_voi(f, margin) for f in truth])
    networks = {}
    for directory in model_dirs:
        model, config = load_pet_model(directory)
        method = config["method"]
        if method in networks:
            raise ValueError(f"two models trained with method {method!r}: {networks[method][1]} and {directory}")
        networks[method] = (model, Path(directory))
    raw = {method: predict_fractions(model, data.images).astype(np.float64)
           for method, (model, _) in tqdm(networks.items(), desc="PET networks", disable=not progress)}

    predictions = {"threshold40": np.stack([threshold_max(im, v) for im, v in zip(data.images, voi)])}
    supplementary = {}
    if "fraction" in raw:
        predictions["fraction"] = raw["fraction"] * voi
        supplementary["fraction_binarised"] = (raw["fraction"] >= 0.5) * voi
        supplementary["fraction_whole_image"] = raw["fraction"]
    if "binary" in raw:
        predictions["binary_unet"] = (raw["binary"] >= 0.5) * voi
        supplementary["binary_unet_whole_image"] = (raw["binary"] >= 0.5).astype(np.float64)

    diameter_ratio = np.array([m["diameter_over_fwhm"] for m in data.meta], dtype=np.float64)
    dose = np.array([m["dose"] for m in data.meta], dtype=np.float64)
    dose_edges = np.geomspace(*cfg.dose_range, N_DOSE_BINS + 1)
    dose_edges[-1] *= 1.0 + 1e-9  # the top edge is inclusive
    scores = {name: per_image_scores(pred, truth) for name, pred in {**predictions, **supplementary}.items()}
    metrics: dict = {}
    for name in [m for m in MAIN_METHODS if m in predictions]:
        metrics[name] = summarise(scores[name], n_boot, diameter_ratio, dose, dose_edges)
    metrics["supplementary"] = {name: summarise(scores[name], n_boot, diameter_ratio, dose, dose_edges)
                                for name in supplementary}
    if "fraction" in predictions:
        metrics["comparisons"] = {
            f"fraction_minus_{base}": {metric: paired_difference(scores["fraction"][metric], scores[base][metric],
                                                                 n_boot) for metric in ("fuzzy_dice", "area_error")}
            for base in ("threshold40", "binary_unet") if base in predictions}
    metrics["test_set"] = {
        "data": str(test_dir), "n_images": len(data), "seed": data.seed, "simulator": cfg.to_dict(),
        "voi_margin_px": margin, "diameter_bins_over_fwhm": list(DIAMETER_EDGES), "dose_bins": dose_edges.tolist(),
        "models": {method: str(path) for method, (_, path) in networks.items()},
        "median_relative_noise": float(np.median([m["relative_noise"] for m in data.meta])),
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        from dermlens.report.html import json_safe

        metrics = json_safe(metrics)
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
        if report:
            from dermlens.pet.report import write_pet_report

            examples = _examples(data, truth, {**predictions})
            write_pet_report(metrics, examples, out_dir / "report.html")
    return metrics


def _examples(data, truth: np.ndarray, predictions: dict[str, np.ndarray], per_bin: int = 1) -> list[dict]:
    """One test case per diameter bin, smallest first, for the report's picture of the methods."""
    ratio = np.array([m["diameter_over_fwhm"] for m in data.meta])
    chosen = []
    for low, high in zip(DIAMETER_EDGES[:-1], DIAMETER_EDGES[1:]):
        inside = np.flatnonzero((ratio >= low) & (ratio < high))
        chosen += [int(i) for i in inside[:per_bin]]
    return [{"index": i, "meta": data.meta[i], "image": data.images[i], "truth": truth[i],
             "predictions": {name: pred[i] for name, pred in predictions.items()}} for i in chosen]
