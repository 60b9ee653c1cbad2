"""What the bundled segmenter scores, as documented, and the check that it still does.

``weights/segmenter/figures.json`` holds the figures of ``benchmarks/segmentation.py`` for the bundled segmenter
(per evaluation set: mean Jaccard and the ISIC thresholded Jaccard with their 95% bootstrap intervals, the share of
cases below 0.65); docs/segmentation.md's table is rendered from it by ``figures_table``. The evaluation is
deterministic (fixed images, no sampling), so a re-run gives the recorded numbers up to floating-point differences
between CPUs; a figure outside its recorded 95% interval means the weights, the preprocessing or the metric changed.
"""
from __future__ import annotations

import json
from pathlib import Path

from dermlens.segment.segmenter import BUNDLED_SEGMENTER_DIR

FIGURES_FILE = BUNDLED_SEGMENTER_DIR / "figures.json"
# Thresholded-Jaccard targets (issue 9): ISIC 2018's measure, on HAM10000 test and on PH2 (an external set).
TARGETS = {"ham10000_test": 0.78, "ph2": 0.80}
LABELS = {"ham10000_test": "HAM10000 test", "ph2": "PH2 (765x574, never seen)"}
SCORES = ("mean_jaccard", "thresholded_jaccard")


def headline_figures(metrics: dict) -> dict:
    """The recorded part of ``evaluate_dataset``'s metrics (no per-image rows)."""
    return {"n": metrics["n"], "tta": metrics["tta"], "share_below_0.65": metrics["share_below_0.65"],
            **{key: metrics[key] for name in SCORES for key in (name, f"{name}_ci95")}}


def documented_figures(path: str | Path = FIGURES_FILE) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no documented segmenter figures; record them with "
                                "`python benchmarks/segmentation.py --record`")
    return json.loads(path.read_text())["sets"]


def check_figures(measured: dict[str, dict], documented: dict[str, dict]) -> list[str]:
    """Every way the measured sets depart from the record or miss their target; [] when none. Sets not measured
    are not checked; a measured set without a record is a departure."""
    problems = []
    for name, now in measured.items():
        if name not in documented:
            problems.append(f"{name}: no documented figures to compare with")
            continue
        then = documented[name]
        for key in ("n", "tta"):
            if now[key] != then[key]:
                problems.append(f"{name}: {key} {now[key]} is not the documented {then[key]}")
        for score in SCORES:
            low, high = then[f"{score}_ci95"]
            if not low <= now[score] <= high:
                problems.append(f"{name}: {score} {now[score]:.3f} is outside the documented 95% interval "
                                f"{low:.3f}-{high:.3f} (documented {then[score]:.3f})")
        if name in TARGETS and now["thresholded_jaccard"] < TARGETS[name]:
            problems.append(f"{name}: thresholded Jaccard {now['thresholded_jaccard']:.3f} misses its target "
                            f"{TARGETS[name]:.2f}")
    return problems


def figures_table(figures: dict[str, dict]) -> str:
    """docs/segmentation.md's table, rendered from ``figures`` (so the docs quote the record)."""
    lines = ["| | n | mean Jaccard | thresholded Jaccard (ISIC, 0 below 0.65) | cases below 0.65 | target |",
             "|---|---|---|---|---|---|"]
    for name, f in figures.items():
        cells = [f"{f[s]:.3f} [{f[f'{s}_ci95'][0]:.3f}, {f[f'{s}_ci95'][1]:.3f}]" for s in SCORES]
        target = TARGETS.get(name)
        met = target is not None and f["thresholded_jaccard"] >= target
        verdict = "–" if target is None else f">= {target:.2f}, {'met' if met else 'missed'}"
        lines.append(f"| {LABELS.get(name, name)} | {f['n']} | {cells[0]} | {cells[1]} | "
                     f"{f['share_below_0.65']:.1%} | {verdict} |")
    return "\n".join(lines)
