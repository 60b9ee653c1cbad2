"""The PET tissue-fraction comparison at the size reported in the README.

    python benchmarks/pet.py [--out runs/bench-pet] [--n-train 4400] [--n-test 1000] [--epochs 30] [--seed 0]

Simulates a training set (seed) and a test set (seed + 1) of 64x64 PET slices, trains the tissue-fraction U-Net
(soft-label cross-entropy) and the binary U-Net (same network, binarised masks), and evaluates them with the 40%
threshold on the test set. Prints fuzzy Dice and relative area error per method (95% bootstrap CIs), their values
for tumours smaller than 1.5 FWHM, the paired differences, and the wall time of every stage. Stages already
present in ``--out`` are reused (rerun after a kill to resume), so the times printed are those of this run.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from dermlens.pet.dataset import IMAGES, simulate_dataset
from dermlens.pet.evaluation import evaluate_pet
from dermlens.pet.simulator import SimulatorConfig
from dermlens.pet.study import TEST_SEED_OFFSET, summary_lines
from dermlens.pet.training import MODEL_FILE, PETTrainConfig, train_pet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-pet"))
    parser.add_argument("--n-train", type=int, default=4400)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
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
    print("times (s):", ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print(f"report: {args.out / 'evaluation' / 'report.html'}")


if __name__ == "__main__":
    main()
