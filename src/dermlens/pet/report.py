"""``report.html`` for the PET comparison: one self-contained page, figures embedded as PNG."""
from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dermlens.report.figures import to_png  # noqa: E402
from dermlens.report.html import CSS, img, table  # noqa: E402

TITLES = {"fraction": "tissue-fraction U-Net", "threshold40": "40% of max threshold", "binary_unet": "binary U-Net",
          "fraction_binarised": "tissue-fraction U-Net, binarised at 0.5",
          "fraction_whole_image": "tissue-fraction U-Net, whole image (no box)",
          "binary_unet_whole_image": "binary U-Net, whole image (no box)"}
COLOURS = {"fraction": "tab:blue", "threshold40": "tab:orange", "binary_unet": "tab:green"}
METRIC_TITLES = {"fuzzy_dice": "fuzzy Dice (higher is better)", "area_error": "relative area error (lower is better)"}


def _methods(metrics: dict) -> list[str]:
    return [m for m in ("fraction", "threshold40", "binary_unet") if m in metrics]


def _error_bars(value: float, ci: list) -> list[list[float]]:
    return [[max(0.0, value - ci[0])], [max(0.0, ci[1] - value)]]


def overall_figure(metrics: dict) -> bytes:
    methods = _methods(metrics)
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.4))
    for ax, metric in zip(axes, METRIC_TITLES):
        for k, method in enumerate(methods):
            value, ci = metrics[method][metric], metrics[method][f"{metric}_ci95"]
            ax.bar(k, value, color=COLOURS[method], alpha=0.8)
            ax.errorbar(k, value, yerr=_error_bars(value, ci), color="black", capsize=4)
            ax.text(k, value, f"{value:.3f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(methods)), [TITLES[m] for m in methods], rotation=15, fontsize=8)
        ax.set_title(METRIC_TITLES[metric] + ", 95% CI", fontsize=9)
    fig.tight_layout()
    return to_png(fig)


def _bin_label(row: dict, fmt: str) -> str:
    if row["high"] == float("inf") or row["high"] is None:
        return f"≥ {row['low']:{fmt}}"
    if row["low"] == 0:
        return f"< {row['high']:{fmt}}"
    return f"{row['low']:{fmt}}–{row['high']:{fmt}}"


def binned_figure(metrics: dict, key: str, xlabel: str, fmt: str) -> bytes:
    methods = _methods(metrics)
    rows0 = metrics[methods[0]][key]
    labels = [f"{_bin_label(r, fmt)}\n(n={r['n']})" for r in rows0]
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6))
    for ax, metric in zip(axes, METRIC_TITLES):
        for k, method in enumerate(methods):
            rows = metrics[method][key]
            xs = np.arange(len(rows)) + (k - 1) * 0.08
            ys = np.array([np.nan if r[metric] is None else r[metric] for r in rows], dtype=float)
            lows = np.array([np.nan if r[f"{metric}_ci95"][0] is None else r[f"{metric}_ci95"][0] for r in rows])
            highs = np.array([np.nan if r[f"{metric}_ci95"][1] is None else r[f"{metric}_ci95"][1] for r in rows])
            ax.errorbar(xs, ys, yerr=[np.clip(ys - lows, 0, None), np.clip(highs - ys, 0, None)], marker="o",
                        capsize=3, color=COLOURS[method], label=TITLES[method])
        ax.set_xticks(range(len(labels)), labels, fontsize=7.5)
        ax.set_xlabel(xlabel, fontsize=8.5)
        ax.set_title(METRIC_TITLES[metric] + (", log scale" if metric == "area_error" else ""), fontsize=9)
        if metric == "area_error":  # thresholds can be off by several times the area, networks by tens of percent
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7.5)
    fig.tight_layout()
    return to_png(fig)


def examples_figure(examples: list[dict], pixel_mm: float) -> bytes:
    methods = [m for m in ("fraction", "binary_unet", "threshold40") if examples and m in examples[0]["predictions"]]
    columns = ["image", "truth", *methods]
    fig, axes = plt.subplots(len(examples), len(columns), figsize=(1.9 * len(columns), 2.0 * len(examples)),
                             squeeze=False)
    for row, case in zip(axes, examples):
        rows, cols = np.nonzero(case["truth"] > 0)
        cy, cx = int(rows.mean()), int(cols.mean())
        half = max(8, int(np.ptp(rows) + np.ptp(cols)) // 2 + 6)
        box = (slice(max(0, cy - half), cy + half), slice(max(0, cx - half), cx + half))
        maps = [case["image"], case["truth"], *[case["predictions"][m] for m in methods]]
        for ax, name, values in zip(row, columns, maps):
            crop = values[box]
            if name == "image":
                ax.imshow(crop, cmap="gray_r")
            else:
                ax.imshow(crop, cmap="magma", vmin=0, vmax=1)
                ax.set_xlabel(f"area {crop.sum():.1f} px", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        meta = case["meta"]
        row[0].set_ylabel(f"d = {meta['diameter_mm']:.0f} mm\n({meta['diameter_over_fwhm']:.1f} FWHM)\n"
                          f"TBR {meta['tbr']:.1f}, dose {meta['dose']:.0f}", fontsize=7)
    for ax, name in zip(axes[0], columns):
        ax.set_title(TITLES.get(name, name), fontsize=8)
    fig.tight_layout()
    return to_png(fig)


def _ci(entry: dict, metric: str) -> str:
    value, ci = entry.get(metric), entry.get(f"{metric}_ci95") or [None, None]
    if value is None:
        return "–"
    if ci[0] is None:
        return f"{value:.3f}"
    return f"{value:.3f} ({ci[0]:.3f}–{ci[1]:.3f})"


def write_pet_report(metrics: dict, examples: list[dict], path: str | Path) -> Path:
    path = Path(path)
    test = metrics["test_set"]
    sim = test["simulator"]
    methods = _methods(metrics)
    parts = ["<h1>dermlens PET: tissue fractions against thresholding and a binary U-Net</h1>",
             "<p class=warn><b>SIMULATED DATA.</b> Every image was drawn by dermlens' 2-D PET simulator (after Liu, "
             "Jha et al., Phys. Med. Biol. 66:124002, 2021). The figures compare methods under known truth; they "
             "are not a clinical validation.</p>"]
    parts.append(table(["", ""], [
        ["test set", f"{html.escape(test['data'])}: {test['n_images']} images (seed {test['seed']})"],
        ["scanner", f"{sim['grid']}×{sim['grid']} pixels of {sim['pixel_mm']} mm, PSF FWHM {sim['fwhm_mm']} mm, "
                    + (f"OSEM {sim['osem_iterations']} iterations × {sim['osem_subsets']} subsets, "
                       f"{sim['n_angles']} angles" if sim["reconstruction"] else "counts in image space")
                    + f"; dose {sim['dose_range'][0]:.0f}–{sim['dose_range'][1]:.0f} counts per slice "
                      f"(median relative noise in the body {test['median_relative_noise']:.2f})"],
        ["tumours", f"equivalent diameter {sim['diameter_mm_range'][0]}–{sim['diameter_mm_range'][1]} mm, "
                    f"TBR {sim['tbr_range'][0]}–{sim['tbr_range'][1]}, {sim['harmonics']} EFD harmonics, "
                    f"uptake heterogeneity {sim['heterogeneity']}"],
        ["box", f"every method is scored inside the true tumour's bounding box widened by {test['voi_margin_px']} "
                "pixels (where a reader would draw it); outside it the prediction counts as 0"],
        ["models", "; ".join(f"{m}: {html.escape(p)}" for m, p in test["models"].items()) or "–"],
    ], left=2))
    parts.append("<h2>Overall (mean over test images, 95% bootstrap CI)</h2>")
    parts.append(table(["method", "fuzzy Dice", "area error |ΔA|/A", "area bias ΔA/A", "Jaccard (at 0.5)"],
                        [[TITLES[m], _ci(metrics[m], "fuzzy_dice"), _ci(metrics[m], "area_error"),
                          _ci(metrics[m], "area_bias"), _ci(metrics[m], "jaccard")] for m in methods]))
    parts.append(img(overall_figure(metrics), "overall"))
    comparisons = metrics.get("comparisons") or {}
    if comparisons:
        parts.append("<h3>Paired differences on the same images (fraction minus baseline, 95% CI)</h3>")
        parts.append(table(["comparison", "Δ fuzzy Dice", "Δ area error"], [
            [name.replace("_", " "), _ci({"v": d["fuzzy_dice"]["mean"], "v_ci95": d["fuzzy_dice"]["ci95"]}, "v"),
             _ci({"v": d["area_error"]["mean"], "v_ci95": d["area_error"]["ci95"]}, "v")]
            for name, d in comparisons.items()]))
    for key, title, xlabel, fmt in (
            ("by_diameter", "As the tumour shrinks toward the resolution limit", "tumour diameter / FWHM", ".1f"),
            ("by_dose", "As noise grows (lower dose)", "dose (counts per slice)", ".3g")):
        parts.append(f"<h2>{title}</h2>")
        parts.append(img(binned_figure(metrics, key, xlabel, fmt), key))
        rows = []
        for k, r in enumerate(metrics[methods[0]][key]):
            rows.append([_bin_label(r, fmt), str(r["n"])] + [_ci(metrics[m][key][k], metric)
                                                             for metric in METRIC_TITLES for m in methods])
        parts.append(table([xlabel, "n"] + [f"{TITLES[m]}: {metric.replace('_', ' ')}"
                                             for metric in METRIC_TITLES for m in methods], rows, left=1))
    supplementary = metrics.get("supplementary") or {}
    if supplementary:
        parts.append("<h2>Supplementary</h2>")
        parts.append(table(["method", "fuzzy Dice", "area error", "area bias", "Jaccard (at 0.5)"],
                            [[TITLES.get(m, m), _ci(e, "fuzzy_dice"), _ci(e, "area_error"), _ci(e, "area_bias"),
                              _ci(e, "jaccard")] for m, e in supplementary.items()]))
        parts.append("<p class=note>Binarising the fraction output shows how much of its advantage is the fractional "
                     "output itself; the whole-image rows show the networks without the reader's box, where they must "
                     "also find the tumour among hot organs.</p>")
    if examples:
        parts.append("<h2>Examples (one per diameter bin, cropped around the tumour)</h2>")
        parts.append(img(examples_figure(examples, sim["pixel_mm"]), "examples"))
    parts.append("<p class=note>Every number is in metrics.json beside this file. A research tool, not a medical "
                 "device.</p>")
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>dermlens PET tissue fractions</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
