"""What the shipped PET networks score, as documented, and the check that they still do.

``weights/pet/figures.json`` holds the headline figures of ``dermlens pet evaluate --out DIR`` (the shipped networks
on the fresh test set: 500 images, seed 1) as measured when the networks were shipped; docs/pet.md's table is
rendered from it by ``figures_table``. ``check_figures`` compares a new evaluation with it and with the paper's
claim, and returns every departure as one line (``benchmarks/pet.py --shipped`` prints them and exits non-zero).

The test set is drawn from a fixed seed and inference is deterministic, so a re-evaluation gives the documented
numbers up to floating-point differences between CPUs; a figure outside its documented 95% interval therefore
means the networks, the simulator or the metrics changed.
"""
from __future__ import annotations

import json
from pathlib import Path

from dermlens.pet.bundled import BUNDLED_PET_DIR

FIGURES_FILE = BUNDLED_PET_DIR / "figures.json"
METHODS = ("fraction", "threshold40", "binary_unet")
BASELINES = ("threshold40", "binary_unet")
LABELS = {"fraction": "tissue-fraction U-Net", "threshold40": "40% of max threshold", "binary_unet": "binary U-Net"}
METRICS = ("fuzzy_dice", "area_error")
# The claim the shipped networks must keep (issue 26): the fraction network at least this good on the fresh test set.
MIN_FRACTION_FUZZY_DICE = 0.57
MAX_FRACTION_AREA_ERROR = 0.5


def headline_figures(metrics: dict) -> dict:
    """The figures docs/pet.md reports, taken from ``evaluate_pet``'s metrics: per method the overall means with
    their 95% intervals and the smallest-tumour bin, and the paired differences fraction minus each baseline."""
    methods = {}
    for method in METHODS:
        m = metrics[method]
        small = m["by_diameter"][0]
        methods[method] = {
            **{key: m[key] for name in METRICS for key in (name, f"{name}_ci95")}, "area_bias": m["area_bias"],
            "smallest": {"below_fwhm": small["high"], "n": small["n"],
                         **{key: small[key] for name in METRICS for key in (name, f"{name}_ci95")}},
        }
    test_set = metrics["test_set"]
    return {"test_set": {"n_images": test_set["n_images"], "seed": test_set["seed"]}, "methods": methods,
            "comparisons": {f"fraction_minus_{base}": metrics["comparisons"][f"fraction_minus_{base}"]
                            for base in BASELINES}}


def documented_figures(path: str | Path = FIGURES_FILE) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no documented PET figures; record them with "
                                "`python benchmarks/pet.py --shipped --record`")
    return json.loads(path.read_text())


def _inside(value: float, interval: list[float]) -> bool:
    return interval[0] <= value <= interval[1]


def check_figures(measured: dict, documented: dict) -> list[str]:
    """Every way ``measured`` (``headline_figures``) departs from ``documented`` or from the claim; [] when none."""
    problems = []
    if measured["test_set"] != documented["test_set"]:
        problems.append(f"test set {measured['test_set']} is not the documented {documented['test_set']}")
    for method in METHODS:
        now, then = measured["methods"][method], documented["methods"][method]
        for scope, new, old in (("overall", now, then), ("smallest tumours", now["smallest"], then["smallest"])):
            for name in METRICS:
                if not _inside(new[name], old[f"{name}_ci95"]):
                    low, high = old[f"{name}_ci95"]
                    problems.append(f"{method} {name} ({scope}) {new[name]:.3f} is outside the documented "
                                    f"95% interval {low:.3f}-{high:.3f} (documented {old[name]:.3f})")
    for name, difference in measured["comparisons"].items():
        for metric in METRICS:
            old = documented["comparisons"][name][metric]
            if not _inside(difference[metric]["mean"], old["ci95"]):
                problems.append(f"{name} {metric} {difference[metric]['mean']:+.3f} is outside the documented "
                                f"95% interval {old['ci95'][0]:+.3f} to {old['ci95'][1]:+.3f}")
    return problems + claim_problems(measured)


def claim_problems(figures: dict) -> list[str]:
    """Where the fraction network fails the paper's claim: it must beat the 40% threshold and the binary U-Net on
    fuzzy Dice and area error, overall (paired 95% interval clear of 0) and in the smallest-tumour bin."""
    methods, problems = figures["methods"], []
    fraction = methods["fraction"]
    if fraction["fuzzy_dice"] < MIN_FRACTION_FUZZY_DICE:
        problems.append(f"fraction fuzzy Dice {fraction['fuzzy_dice']:.3f} < {MIN_FRACTION_FUZZY_DICE}")
    if fraction["area_error"] > MAX_FRACTION_AREA_ERROR:
        problems.append(f"fraction area error {fraction['area_error']:.3f} > {MAX_FRACTION_AREA_ERROR}")
    upper = methods["threshold40"]["fuzzy_dice_ci95"][1]
    if fraction["fuzzy_dice"] <= upper:
        problems.append(f"fraction fuzzy Dice {fraction['fuzzy_dice']:.3f} is not above the threshold's upper "
                        f"95% bound {upper:.3f}")
    for base in BASELINES:
        difference = figures["comparisons"][f"fraction_minus_{base}"]
        if difference["fuzzy_dice"]["ci95"][0] <= 0:
            problems.append(f"fraction does not beat {base} on fuzzy Dice: paired difference 95% interval "
                            f"{difference['fuzzy_dice']['ci95'][0]:+.3f} to {difference['fuzzy_dice']['ci95'][1]:+.3f}")
        if difference["area_error"]["ci95"][1] >= 0:
            problems.append(f"fraction does not beat {base} on area error: paired difference 95% interval "
                            f"{difference['area_error']['ci95'][0]:+.3f} to {difference['area_error']['ci95'][1]:+.3f}")
        small, small_base = fraction["smallest"], methods[base]["smallest"]
        if small["fuzzy_dice"] <= small_base["fuzzy_dice"]:
            problems.append(f"smallest tumours: fraction fuzzy Dice {small['fuzzy_dice']:.3f} is not above "
                            f"{base}'s {small_base['fuzzy_dice']:.3f}")
        if small["area_error"] >= small_base["area_error"]:
            problems.append(f"smallest tumours: fraction area error {small['area_error']:.3f} is not below "
                            f"{base}'s {small_base['area_error']:.3f}")
    return problems


def figures_table(figures: dict) -> str:
    """docs/pet.md's table and paired-difference line, rendered from ``figures`` (so the docs quote the record)."""
    methods = figures["methods"]
    small = methods["fraction"]["smallest"]
    lines = ["| method | fuzzy Dice | area error | area bias | tumours < "
             f"{small['below_fwhm']:g} FWHM (n={small['n']}): fuzzy Dice / area error |",
             "|---|---|---|---|---|"]
    for method in METHODS:
        m = methods[method]
        cells = [f"{_n(m[name], '.3f')} ({_n(m[f'{name}_ci95'][0], '.3f')}–{_n(m[f'{name}_ci95'][1], '.3f')})"
                 for name in METRICS]
        lines.append(f"| {LABELS[method]} | {cells[0]} | {cells[1]} | {_n(m['area_bias'], '+.2f')} | "
                     f"{_n(m['smallest']['fuzzy_dice'], '.3f')} / {_n(m['smallest']['area_error'], '.2f')} |")
    parts = []
    for base in BASELINES:
        d = figures["comparisons"][f"fraction_minus_{base}"]
        parts.append(f"over {LABELS[base]}: fuzzy Dice {_signed(d['fuzzy_dice'])}, "
                     f"area error {_signed(d['area_error'])}")
    lines += ["", "Paired differences, fraction minus baseline (95% CI), " + "; ".join(parts) + "."]
    return "\n".join(lines)


def _n(value: float, spec: str) -> str:
    """A number as the docs print it: with a true minus sign."""
    return format(value, spec).replace("-", "\u2212")


def _signed(difference: dict) -> str:
    low, high = difference["ci95"]
    return f"{_n(difference['mean'], '+.3f')} ({_n(low, '+.3f')} to {_n(high, '+.3f')})"
