"""The PET tissue-fraction comparison: the shipped networks against their documented figures, or a full study.

    python benchmarks/pet.py --shipped [--out runs/bench-pet-shipped] [--record [--overwrite]]
    python benchmarks/pet.py [--out runs/bench-pet] [--n-train 4400] [--n-test 1000] [--epochs 30] [--seed 0]

``--shipped`` does what ``dermlens pet evaluate --out DIR`` does (the networks in weights/pet/ on 500 newly simulated
images, seed 1), prints docs/pet.md's table rendered from the result, and compares it with the documented record
(weights/pet/figures.json): every figure must lie inside its documented 95% interval, and the fraction network must
keep the paper's claim (beat the 40% threshold and the binary U-Net on fuzzy Dice and area error, overall and on
the smallest tumours; fuzzy Dice >= 0.57 and above the threshold's upper 95% bound; area error <= 0.5). Any
departure is printed and the exit status is 1. ``--record`` writes the measured figures as the new record (after
retraining the shipped networks); neither the record nor a used ``--out`` is replaced without ``--overwrite``.

Without ``--shipped``: simulates a training set (seed) and a test set (seed + 1) of 64x64 PET slices, trains the
tissue-fraction U-Net (soft-label cross-entropy) and the binary U-Net (same network, binarised masks), and evaluates
them with the 40% threshold on the test set. Prints fuzzy Dice and relative area error per method (95% bootstrap
CIs), their values for tumours smaller than 1.5 FWHM, the paired differences, and the wall time of every stage.
Stages already present in ``--out`` are reused (rerun after a kill to resume), so the times printed are those of
this run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from dermlens.pet.bundled import FRESH_TEST_SEED, evaluate_on_fresh_test_set
from dermlens.pet.dataset import IMAGES, simulate_dataset
from dermlens.pet.evaluation import evaluate_pet
from dermlens.pet.figures import FIGURES_FILE, check_figures, documented_figures, figures_table, headline_figures
from dermlens.pet.simulator import SimulatorConfig
from dermlens.pet.study import TEST_SEED_OFFSET, summary_lines
from dermlens.pet.training import MODEL_FILE, PETTrainConfig, train_pet
from dermlens.runtime import cpu_name

SHIPPED_TEST_IMAGES = 500  # what `dermlens pet evaluate --out DIR` draws


def shipped(args) -> int:
    """Evaluate the shipped networks, print the docs table, check it against the record; 1 on any departure."""
    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        print(f"--out {args.out}: folder is not empty; choose a new one or add --overwrite", file=sys.stderr)
        return 2
    if args.record and FIGURES_FILE.is_file() and not args.overwrite:
        print(f"--record: {FIGURES_FILE} exists; add --overwrite to replace the documented figures", file=sys.stderr)
        return 2
    started = time.perf_counter()
    metrics = evaluate_on_fresh_test_set(args.out, n_test=SHIPPED_TEST_IMAGES, seed=FRESH_TEST_SEED)
    seconds = time.perf_counter() - started
    measured = headline_figures(metrics)
    print(figures_table(measured))
    print(f"\n{SHIPPED_TEST_IMAGES} images simulated and evaluated in {seconds:.0f} s on {cpu_name()} "
          f"(torch threads: {torch.get_num_threads()}); report: {args.out / 'report.html'}")
    if args.record:
        command = " ".join(["python", "benchmarks/pet.py", *sys.argv[1:]])
        FIGURES_FILE.write_text(json.dumps({**measured, "command": command, "cpu": cpu_name()}, indent=1) + "\n")
        print(f"recorded as the documented figures: {FIGURES_FILE}")
    problems = check_figures(measured, documented_figures())
    if problems:
        print(f"\nFAILED: the shipped PET networks depart from {FIGURES_FILE.name} or the paper's claim "
              f"({len(problems)}):", file=sys.stderr)
        for line in problems:
            print(f"  - {line}", file=sys.stderr)
        return 1
    print(f"\nOK: every figure inside its documented 95% interval ({FIGURES_FILE}), and the fraction network beats "
          "both baselines on fuzzy Dice and area error, overall and on the smallest tumours.")
    return 0


def study(args) -> int:
    times = {}
    started = time.perf_counter()
    simulator = SimulatorConfig()
    for name, n, seed in (("train", args.n_train, args.seed), ("test", args.n_test, args.seed + TEST_SEED_OFFSET)):
        if not (args.out / name / IMAGES).is_file():
            simulate_dataset(args.out / name, n, seed, simulator)
            times[f"simulate {name} ({n} images)"] = time.perf_counter() - started
            started = time.perf_counter()
    models = []
    for method in ("fraction", "binary"):
        model_dir = args.out / "models" / method
        if not (model_dir / MODEL_FILE).is_file():
            train_pet(args.out / "train", model_dir, replace(PETTrainConfig(epochs=args.epochs, seed=args.seed),
                                                             method=method), resume=True)
            times[f"train {method}"] = time.perf_counter() - started
            started = time.perf_counter()
        models.append(model_dir)
    metrics = evaluate_pet(args.out / "test", models, args.out / "evaluation")
    times["evaluate"] = time.perf_counter() - started
    print("\n".join(summary_lines(metrics)))
    print("\nby tumour diameter / FWHM (fuzzy Dice | area error):")
    for k, row in enumerate(metrics["fraction"]["by_diameter"]):
        cells = [f"{m} {metrics[m]['by_diameter'][k]['fuzzy_dice']:.3f} | {metrics[m]['by_diameter'][k]['area_error']:.3f}"
                 for m in ("fraction", "threshold40", "binary_unet")]
        print(f"  [{row['low']:g}, {row['high']:g}) n={row['n']}: " + "; ".join(cells))
    print("by dose (fuzzy Dice | area error):")
    for k, row in enumerate(metrics["fraction"]["by_dose"]):
        cells = [f"{m} {metrics[m]['by_dose'][k]['fuzzy_dice']:.3f} | {metrics[m]['by_dose'][k]['area_error']:.3f}"
                 for m in ("fraction", "threshold40", "binary_unet")]
        print(f"  [{row['low']:.3g}, {row['high']:.3g}) n={row['n']}: " + "; ".join(cells))
    print("supplementary:", json.dumps({k: {"fuzzy_dice": round(v["fuzzy_dice"], 3), "area_error": round(v["area_error"], 3)}
                                        for k, v in metrics["supplementary"].items()}))
    print("times (s):", ", ".join(f"{k} {v:.0f}" for k, v in times.items()), f"on {cpu_name()}")
    print(f"report: {args.out / 'evaluation' / 'report.html'}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shipped", action="store_true", help="check the shipped networks against their record")
    parser.add_argument("--record", action="store_true", help="with --shipped: write the figures as the record")
    parser.add_argument("--overwrite", action="store_true", help="replace the --out folder's results (and, with --record, the record)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default runs/bench-pet-shipped (--shipped) or runs/bench-pet")
    parser.add_argument("--n-train", type=int, default=4400)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.record and not args.shipped:
        parser.error("--record needs --shipped")
    args.out = args.out or Path("runs/bench-pet-shipped" if args.shipped else "runs/bench-pet")
    torch.set_num_threads(1)
    return shipped(args) if args.shipped else study(args)


if __name__ == "__main__":
    sys.exit(main())
